"""Write questions.jsonl: customer questions about the products in docs/, answered from those documents.

Each row names the document that holds its answer (metadata.relevant), so evaluation can score
retrieval (recall@k, MRR). Deterministic: `python make_questions.py` rewrites the same file.
"""

import json
import random
from pathlib import Path

FACTS = {
    "nimbus-x2-router.md": [
        (["How do I reset my Nimbus X2 router?", "What's the factory reset procedure for the Nimbus X2?",
          "My Nimbus X2 needs a reset, what do I do?", "How can I restore the Nimbus X2 to factory settings?"],
         "Hold the recessed reset button for 12 seconds until the status light blinks amber."),
        (["What does a solid red light on the Nimbus X2 mean?", "Why is my Nimbus X2 light red?",
          "The Nimbus X2 shows a red light, what is wrong?"],
         "A solid red light means the router has no internet connection."),
        (["What does the blinking amber light on the Nimbus X2 mean?", "Why is my Nimbus X2 blinking amber?"],
         "A blinking amber light means a reset or firmware update is in progress."),
        (["How long is the warranty on the Nimbus X2?", "What warranty does the Nimbus X2 router have?",
          "Is the Nimbus X2 under warranty for long?"],
         "The Nimbus X2 comes with a 2-year limited warranty."),
    ],
    "lumen-desk-lamp.md": [
        (["How long does the Lumen lamp battery last?", "What is the battery life of the Lumen desk lamp?",
          "How many hours does the Lumen run on battery?"],
         "The battery lasts 9 hours at medium brightness."),
        (["How long does the Lumen take to charge?", "How long to fully charge the Lumen desk lamp?"],
         "The Lumen charges fully in 4 hours."),
        (["How do I switch the Lumen between warm and cool light?", "Can the Lumen lamp change to warm white?",
          "How do I change the Lumen's light colour?"],
         "Hold the touch ring for 3 seconds to switch between warm and cool white."),
        (["What is the warranty on the Lumen desk lamp?", "How long is the Lumen lamp covered by warranty?"],
         "The Lumen desk lamp comes with a 1-year warranty."),
    ],
    "terra-blender.md": [
        (["How long does the Terra soup program run?", "Does the Terra blender heat soup?",
          "What does the soup program on the Terra do?"],
         "The soup program runs for 6 minutes and also heats the contents."),
        (["How do I clean the Terra blender?", "What's the best way to clean my Terra jar?",
          "Cleaning instructions for the Terra blender?"],
         "Fill the jar halfway with warm water and a drop of dish soap, then run the smoothie program."),
        (["Can I put the Terra motor base in the dishwasher?", "Is the Terra blender dishwasher safe?"],
         "The jar, lid and blade are dishwasher safe; the motor base is not."),
        (["What warranty does the Terra blender have?", "How long is the Terra motor warranty?"],
         "The Terra blender comes with a 3-year warranty on the motor."),
    ],
    "returns-policy.md": [
        (["How long do I have to return a product?", "What is your return window?", "Can I still return something after three weeks?"],
         "Products can be returned within 30 days of delivery for a full refund."),
        (["Do I pay for return shipping?", "Is return shipping free?", "Who pays the postage for a return?"],
         "Return shipping is free when you use the prepaid label from your account page."),
        (["When will I get my refund?", "How long does a refund take?", "My return arrived, when is my money back?"],
         "Refunds go back to the original payment method within 5 business days after the return arrives."),
    ],
}
OPENERS = ["", "Hi, ", "Hello! ", "Quick question: ", "Hey there, "]


def main() -> None:
    rng = random.Random(0)
    rows = []
    for doc, facts in FACTS.items():
        for questions, answer in facts:
            for question in questions:
                for opener in rng.sample(OPENERS, 1):
                    rows.append({"messages": [{"role": "user", "content": opener + question[0].lower() + question[1:] if opener else question},
                                              {"role": "assistant", "content": answer}],
                                 "metadata": {"relevant": [doc]}})
    rng.shuffle(rows)
    out = Path(__file__).with_name("questions.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} rows -> {out}")


if __name__ == "__main__":
    main()

"""Clients of OpenAI-compatible APIs run by others (a hosted provider, another tuneloop server): chat answers
with retries, concurrency and token counts (chat.py), and the files and fine-tuning jobs API (finetune.py),
over one HTTP client that retries what is safe to retry (client.py). A library any stage may use."""

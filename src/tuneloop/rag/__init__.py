"""Retrieval-augmented generation, a library any stage may use (data, eval and serve do): a knowledge base of
the team's own documents, and the prompt that uses it.

    load_documents  Markdown, text, HTML, PDF and JSONL files -> Documents with stable ids  (loaders.py)
    chunk           heading- and paragraph-aware passages with overlap                       (chunking.py)
    KnowledgeBase   build / load / add / remove / save / search: MiniLM vectors in faiss plus BM25,
                    fused by reciprocal rank; one directory with a manifest                  (index.py)
    render_context, augment, sources
                    the single template that puts passages in a prompt, at training and serving
                    alike, and the citations to return with an answer                       (template.py)
    recall_at_k, mrr, groundedness
                    retrieval quality on labelled queries, and whether answers stick to
                    their context                                                            (metrics.py)
"""

from tuneloop.rag.chunking import Chunk, chunk
from tuneloop.rag.index import Hit, KnowledgeBase
from tuneloop.rag.loaders import Document, load_documents
from tuneloop.rag.metrics import groundedness, mrr, recall_at_k
from tuneloop.rag.template import DEFAULT_TEMPLATE, augment, render_context, sources

__all__ = ["DEFAULT_TEMPLATE", "Chunk", "Document", "Hit", "KnowledgeBase", "augment", "chunk", "groundedness",
           "load_documents", "mrr", "recall_at_k", "render_context", "sources"]

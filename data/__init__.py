"""The data pipeline, in the order data flows through it.

    sources.py   data.source -> the text documents of each split -> one token array per split
    tokenize.py  byte / char / bpe tokenizers (built from the sources' documents, saved as JSON)
    pipeline.py  a split's tokens -> fixed-length examples -> grain batches (resumable, per process)
"""

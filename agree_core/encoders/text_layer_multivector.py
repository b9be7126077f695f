"""``text-layer:MODEL`` for late-interaction text checkpoints: ColBERT, PyLate, ST multi-vector.

``--encoder text-layer:MODEL`` reads the page's text layer (OCR for scans) with any
late-interaction text model that Sentence Transformers 6 loads as a ``MultiVectorEncoder``:

- its own saves (``config_sentence_transformers.json`` with ``"model_type": "MultiVectorEncoder"``),
- PyLate saves (``"model_type": "ColBERT"``, ``query_prefix``/``document_prefix`` such as
  ``[unused0]``/``[unused1]``, ``query_length``/``document_length``, a ``pylate.models.Dense.Dense``
  projection in ``modules.json``): answerai-colbert-small, GTE-ModernColBERT, LateOn...,
- Stanford ColBERT saves (``artifact.metadata``, ``HF_ColBERT``): colbertv2.0.

The model runs as :class:`~agree_core.encoders.st_multivector.SentenceTransformersEncoder` runs
it (its prompts, lengths, query expansion and skiplist; the vectors ``encode_document`` returns),
and each vector is tied to the grid cell of the word it came from, so heatmaps and evidence work
as with the default encoder. A BERT-style model without a late-interaction head (or a LoRA
adapter over one) stays with :class:`~agree_core.encoders.text_layer.TextLayerEncoder`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agree_core.encoders.colvision.checkpoint import CheckpointError
from agree_core.encoders.st_multivector import SentenceTransformersEncoder

__all__ = ["TextLayerMultiVectorEncoder", "is_multivector_checkpoint"]

_MULTIVECTOR_TYPES = ("MultiVectorEncoder", "ColBERT")
_PYLATE_KEYS = ("query_prefix", "document_prefix", "query_length", "document_length", "do_query_expansion",
                "attend_to_expansion_tokens", "skiplist_words")


class TextLayerMultiVectorEncoder(SentenceTransformersEncoder):
    """A ColBERT / PyLate / ST multi-vector text model over the page's text layer.

    Args:
        checkpoint: a local directory or hub id (``text-layer:answerdotai/answerai-colbert-small-v1``).
        options: as :class:`~agree_core.encoders.st_multivector.SentenceTransformersEncoder`
            (device, dtype, batch_size, query_batch_size, grid_cells, ocr, ocr_dpi).
    """

    needs_images = False  # text only: pages are read from their text layer (OCR renders by itself)

    def __init__(self, checkpoint: str, **options: Any):
        super().__init__(checkpoint, **options)
        self.name = f"text-layer:{self.cfg.model}"

    def _load(self) -> None:
        super()._load()
        if self._visual:
            self._st = None
            raise CheckpointError(f"{self.cfg.model} is a visual model (it reads page images): use "
                                  f"--encoder st:{self.cfg.model}; text-layer:MODEL takes text models")


def is_multivector_checkpoint(spec: str) -> bool:
    """Whether ``spec`` (a directory or hub id) is a late-interaction text checkpoint that
    Sentence Transformers loads as a ``MultiVectorEncoder``, by its config files alone.

    A hub id is looked up in the local Hugging Face cache first, then on the hub; when neither
    answers, :class:`CheckpointError` says how to get the files.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return _multivector_files({name: path / name for name in _FILES if (path / name).is_file()})
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return False  # not a hub id: the BERT path reports the missing directory
    return _multivector_files(_hub_files(spec))


_FILES = ("config_sentence_transformers.json", "modules.json", "artifact.metadata", "config.json")


def _multivector_files(files: dict[str, Path]) -> bool:
    if "config_sentence_transformers.json" in files:
        st_config = json.loads(files["config_sentence_transformers.json"].read_text())
        if st_config.get("model_type") in _MULTIVECTOR_TYPES or any(k in st_config for k in _PYLATE_KEYS):
            return True
    if "modules.json" in files:
        types = [m.get("type", "") for m in json.loads(files["modules.json"].read_text())]
        if any(t.startswith("pylate.") or t.endswith("MultiVectorMask") for t in types):
            return True
    if "artifact.metadata" in files:  # Stanford ColBERT
        return True
    if "config.json" in files:
        architectures = json.loads(files["config.json"].read_text()).get("architectures") or []
        return "HF_ColBERT" in architectures
    return False


def _hub_files(repo: str) -> dict[str, Path]:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    found: dict[str, Path] = {}
    cached = {name: try_to_load_from_cache(repo, name) for name in _FILES}
    if any(isinstance(p, str) for p in cached.values()):
        return {name: Path(p) for name, p in cached.items() if isinstance(p, str)}
    for name in _FILES:
        try:
            found[name] = Path(hf_hub_download(repo, name))
        except LocalEntryNotFoundError as e:  # offline (HF_HUB_OFFLINE, no connection) and not cached
            raise _unreachable(repo, e) from e
        except EntryNotFoundError:  # the repo has no such file
            continue
        except RepositoryNotFoundError as e:
            raise CheckpointError(f"text-layer checkpoint {repo!r} is neither a local directory nor a "
                                  "model on the Hugging Face hub") from e
        except Exception as e:  # no access, a proxy refusing
            raise _unreachable(repo, e) from e
    return found


def _unreachable(repo: str, error: Exception) -> CheckpointError:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return CheckpointError(f"text-layer checkpoint {repo!r} is not a local directory and the Hugging Face hub "
                           f"did not answer ({reason}); on a machine with access run "
                           f"`hf download {repo} --local-dir DIR` and pass --encoder text-layer:DIR")

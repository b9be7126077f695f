"""training/train.py on the text-layer encoder: learning, resuming, torchrun, the result in the
CLI, dry runs of the GPU recipes, and the errors a user meets first."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli

from .helpers import ROOT, config, load_train_module, log_entries, write_dataset

train_py = load_train_module()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, samples):
    return write_dataset(tmp_path_factory.mktemp("train-data"), samples)


def test_steps_on_one_batch_reduce_the_loss(dataset, tmp_path):
    data, maps = dataset
    out = tmp_path / "run"
    cfg = config(train_py, data, maps, out, batch_size=6, micro_batch_size=6, max_steps=5, lora_dropout=0.0)
    train_py.train(cfg)
    entries = [e for e in log_entries(out) if "loss" in e]
    assert [e["step"] for e in entries] == [1, 2, 3, 4, 5]
    assert {"global", "local", "loss", "lr", "queries_per_s"} <= set(entries[0])
    assert entries[-1]["loss"] < entries[0]["loss"]
    assert entries[-1]["local"] < entries[0]["local"]  # the relevance moves toward the maps
    assert (out / "adapter_config.json").is_file() and (out / "train_config.yaml").is_file()


def test_resume_continues_exactly_where_an_uninterrupted_run_goes(dataset, tmp_path):
    data, maps = dataset
    whole = tmp_path / "whole"
    train_py.train(config(train_py, data, maps, whole, max_steps=4))
    parts = tmp_path / "parts"
    result = train_py.train(config(train_py, data, maps, parts, max_steps=4, stop_after=2))
    assert result["step"] == 2 and not (parts / "adapter_config.json").exists()
    assert (parts / "checkpoints" / "step-2" / "state.pt").is_file()
    train_py.train(config(train_py, data, maps, parts, max_steps=4), resume="latest")

    a, b = load_file(whole / "adapter_model.safetensors"), load_file(parts / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = lambda out: {e["step"]: e["loss"] for e in log_entries(out) if "loss" in e}  # noqa: E731
    assert steps(whole) == steps(parts)


def test_the_trained_adapter_indexes_and_searches_through_the_cli(dataset, samples, tmp_path):
    data, maps = dataset
    out = tmp_path / "run"
    train_py.train(config(train_py, data, maps, out, max_steps=2))
    index = tmp_path / "index"
    r = cli("index", str(samples[0]), "--index", str(index), "--encoder", f"text-layer:{out}")  # no OCR
    assert r.returncode == 0, r.stderr
    r = cli("search", "--index", str(index), "Which solar site produced the most electricity?", "--json")
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)["hits"]
    assert hits and hits[0]["source"].endswith(".pdf")
    info = json.loads(cli("info", "--index", str(index), "--json").stdout)
    assert info["encoder"] == f"text-layer:{out}"


def test_evaluation_reports_ndcg_and_recall_on_held_out_data(dataset, tmp_path):
    data, maps = dataset
    out = tmp_path / "run"
    result = train_py.train(config(train_py, data, maps, out, max_steps=1, eval_data=str(data), eval_at_start=True))
    evals = [e for e in log_entries(out) if "eval" in e]
    assert [e["step"] for e in evals] == [0, 1]
    assert set(result) == {"step", "ndcg@1", "ndcg@5", "recall@5"}
    assert 0 < result["recall@5"] <= 1


def test_torchrun_two_processes_agree(dataset, tmp_path):
    data, maps = dataset
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29731",
           str(ROOT / "training" / "train.py"), "--encoder", "text-layer", "--train-data", str(data),
           "--teacher-maps", str(maps), "--output-dir", str(out), "--device", "cpu", "--batch-size", "4",
           "--micro-batch-size", "2", "--max-steps", "3", "--lr", "1e-3", "--warmup-steps", "0",
           "--lora-r", "4", "--lora-alpha", "8", "--eval-at-start", "false", "--eval-every", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    entries = log_entries(out)
    assert [e["step"] for e in entries if "loss" in e] == [1, 2, 3]
    assert [e["ranks_max_abs_diff"] for e in entries if "ranks_max_abs_diff" in e] == [0.0]
    assert (out / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("name", ["agree-colqwen2.5", "agree-colpali"])
def test_gpu_recipes_dry_run_on_tiny_stand_ins(name, capsys):
    assert train_py.main(["--config", str(ROOT / "training" / "configs" / f"{name}.yaml"), "--dry-run"]) == 0
    report = capsys.readouterr().out
    assert "one step of softplus + 0.1 x cosine" in report and "adapter_model.safetensors" in report


# -- errors -------------------------------------------------------------------------------------
def test_a_malformed_line_is_named_before_any_model_loads(dataset, tmp_path):
    from agree_core.training.data import DataError

    data, maps = dataset
    bad = tmp_path / "bad.jsonl"
    bad.write_text(data.read_text() + '{"query": "no page here"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:7"):
        train_py.train(config(train_py, bad, maps, tmp_path / "run", encoder="text-layer:/does/not/exist"))


def test_a_missing_image_stops_the_run_before_training(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"query": "q", "image": "gone.png"}\n')
    with pytest.raises(SystemExit, match="gone.png"):
        train_py.train(config(train_py, data, None, tmp_path / "run"))


def test_a_teacher_map_of_the_wrong_grid_is_refused(samples, tmp_path):
    data, maps = write_dataset(tmp_path / "d", samples, map_shape=(16, 60))  # fits no page of the samples
    with pytest.raises(ValueError, match=r"train.jsonl:\d+: teacher map \w+: a 16 x 60 map cannot be of a \d+ x \d+ page"):
        train_py.train(config(train_py, data, maps, tmp_path / "run", max_steps=1))


def test_maps_that_belong_to_no_example_are_an_error(samples, tmp_path):
    data, _ = write_dataset(tmp_path / "a", samples[1:], maps=False)
    _, other_maps = write_dataset(tmp_path / "b", samples[:1])  # maps of another file
    with pytest.raises(SystemExit, match="no teacher map"):
        train_py.train(config(train_py, data, other_maps, tmp_path / "run"))


@pytest.mark.parametrize("args, message", [
    (["--train-data", "x.jsonl", "--output-dir", "o", "--local-loss", "cosine"], "needs teacher_maps"),
    (["--train-data", "x.jsonl", "--output-dir", "o", "--local-loss", "dice", "--teacher-maps", "m"], "local_loss must be"),
    (["--train-data", "x.jsonl"], "output_dir is required"),
    (["--train-data", "x.jsonl", "--output-dir", "o", "--local-loss", "none", "--batch-size", "2",
      "--micro-batch-size", "4"], "micro_batch_size <= batch_size"),
])
def test_bad_settings_are_usage_errors(args, message, capsys):
    with pytest.raises(SystemExit) as e:
        train_py.parse_config(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_unknown_settings_in_a_config_file_are_named(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train_data: x.jsonl\noutput_dir: o\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit):
        train_py.parse_config(["--config", str(cfg)])
    assert "unknown settings ['learning_rate']" in capsys.readouterr().err


def test_config_paths_are_relative_to_the_config_file(tmp_path):
    cfg = tmp_path / "sub" / "c.yaml"
    cfg.parent.mkdir()
    cfg.write_text("train_data: data/train.jsonl\noutput_dir: o\nlocal_loss: none\n")
    parsed, _, _ = train_py.parse_config(["--config", str(cfg), "--lr", "3e-4"])
    assert parsed.train_data == str(tmp_path / "sub" / "data" / "train.jsonl") and parsed.lr == 3e-4


def test_the_tiny_config_trains_on_its_shipped_data(tmp_path):
    out = tmp_path / "tiny"
    assert train_py.main(["--config", str(ROOT / "training" / "configs" / "tiny.yaml"), "--output-dir", str(out),
                          "--max-steps", "2", "--eval-every", "0", "--save-every", "0"]) == 0
    entries = log_entries(out)
    assert [e["step"] for e in entries if "eval" in e] == [0, 2]
    assert all("local" in e for e in entries if "loss" in e)  # the maps were found
    assert (out / "adapter_model.safetensors").is_file()


def test_an_unreadable_pdf_is_skipped_and_named_without_stopping_the_run(dataset, tmp_path, caplog):
    data, maps = dataset
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4\nnot really a pdf\n")
    bad = tmp_path / "train.jsonl"
    bad.write_text(data.read_text() + json.dumps({"query": "what is broken?", "pdf": str(broken), "page": 1}) + "\n"
                   + json.dumps({"query": "what is broken too?", "pdf": str(broken), "page": 2}) + "\n")
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="agree.train"):
        train_py.train(config(train_py, bad, maps, out, batch_size=8, micro_batch_size=4, max_steps=2))
    assert (out / "adapter_model.safetensors").is_file()
    named = [r.getMessage() for r in caplog.records if "broken.pdf:" in r.getMessage()]
    assert named and all("line 7" in m or "line 8" in m for m in named)
    assert len(named) == 1  # the file is named once, not once per page or step


def test_the_run_directory_brings_its_encoder_options(dataset, tmp_path):
    from agree_core.encoders import load_encoder

    data, maps = dataset
    out = tmp_path / "run"
    train_py.train(config(train_py, data, maps, out, max_steps=1, encoder_options={"window": 64, "grid_cells": 256}))
    encoder = load_encoder(f"text-layer:{out}")
    assert encoder.config["window"] == 64 and encoder.config["grid_cells"] == 256
    assert load_encoder(f"text-layer:{out}", window=128).config["window"] == 128


def test_a_run_loads_with_the_window_fusion_it_was_trained_with(dataset, tmp_path):
    import yaml

    from agree_core.encoders import load_encoder

    data, maps = dataset
    out = tmp_path / "run"
    train_py.train(config(train_py, data, maps, out, max_steps=1))
    record = yaml.safe_load((out / "train_config.yaml").read_text())
    # the defaults it was trained with, recorded (window fusion and window layout)
    assert set(record["encoder_options"]) == {"sentence_weight", "layout"}
    assert record["encoder_options"]["sentence_weight"] == 0.4
    assert load_encoder(f"text-layer:{out}").config["sentence_weight"] == 0.4

    # a run of train.py from before the record: trained with the default of then, no fusion
    del record["encoder_options"]["sentence_weight"]
    (out / "train_config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    old = load_encoder(f"text-layer:{out}", dtype="float32")
    assert old.config["sentence_weight"] == 0.0
    assert old.encode_queries(["solar site"])[0].shape[1] == 384  # no window-fusion dimension
    assert load_encoder(f"text-layer:{out}", sentence_weight=0.3).config["sentence_weight"] == 0.3  # given wins


def test_a_run_without_fusion_records_it_in_every_checkpoint(dataset, tmp_path):
    import yaml

    from agree_core.encoders import load_encoder

    data, maps = dataset
    out = tmp_path / "run"
    train_py.train(config(train_py, data, maps, out, max_steps=2, save_every=1, encoder_options={"sentence_weight": 0}))
    for record in [out / "train_config.yaml", *sorted((out / "checkpoints").glob("step-*/train_config.yaml"))]:
        assert yaml.safe_load(record.read_text())["encoder_options"]["sentence_weight"] == 0, record
    assert load_encoder(f"text-layer:{out}").config["sentence_weight"] == 0.0


def test_full_fine_tuning_of_the_text_layer_saves_a_complete_model(dataset, tmp_path):
    from agree_core.encoders import load_encoder

    data, maps = dataset
    out = tmp_path / "full"
    train_py.train(config(train_py, data, maps, out, max_steps=1, lora=False, lr=1e-5))
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    vectors = load_encoder(f"text-layer:{out}", dtype="float32").encode_queries(["solar site"])[0]
    assert vectors.shape[1] == 385  # MiniLM 384 + the window-fusion dimension (sentence_weight 0.4)


@pytest.mark.parametrize("encoder, local", [("colmodernvbert", "cosine"), ("st:lightonai/LateOn", "cosine"),
                                            ("colqwen3", "none"), ("jina-v4", "none")])
def test_every_family_dry_runs_through_the_same_training_code(encoder, local, capsys):
    args = ["--encoder", encoder, "--teacher-maps", "-", "--local-loss", local, "--lora-r", "4", "--dry-run"]
    assert train_py.main(args) == 0
    report = capsys.readouterr().out
    assert f"dry run of {encoder}" in report and "eval {'step': 1" in report
    assert ("model.safetensors" if encoder.startswith("st:") else "adapter_model.safetensors") in report

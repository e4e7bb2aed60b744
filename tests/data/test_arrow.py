import datasets
import numpy as np
import pyarrow as pa
import pytest

from tests.conftest import random_walks, write_corpus
from tsm.data.arrow import ArrowCorpus, DataError


def test_reads_exactly_what_datasets_reads(tmp_path):
    rows = random_walks(50, 5, 40)
    ds = datasets.Dataset.from_dict({"target": rows})
    ds.save_to_disk(str(tmp_path / "c"), num_shards=3)  # several Arrow files -> several chunks
    corpus = ArrowCorpus(tmp_path / "c")
    assert len(corpus) == 50
    assert len(corpus.target.chunks) == 3
    np.testing.assert_array_equal(corpus.lengths, [len(r) for r in rows])
    for i in (0, 16, 17, 33, 49):
        np.testing.assert_array_equal(corpus.item(i).target[0], rows[i])


def test_values_are_zero_copy_views(tmp_path):
    write_corpus(tmp_path / "c", random_walks(10, 50, 60))
    corpus = ArrowCorpus(tmp_path / "c")
    row = corpus.item(3).target
    assert not row.flags.owndata and not row.flags.writeable  # a view into the memory-mapped file


@pytest.mark.parametrize("dtype", ["float64", "int32"])
def test_other_numeric_types_become_float32(tmp_path, dtype):
    rows = [np.arange(10, dtype=dtype), np.arange(5, dtype=dtype)]
    write_corpus(tmp_path / "c", rows)
    item = ArrowCorpus(tmp_path / "c").item(1)
    assert item.target.dtype == np.float32
    np.testing.assert_array_equal(item.target[0], np.arange(5))


def test_nulls_inside_a_series_read_as_nan(tmp_path):
    write_corpus(tmp_path / "c", [[1.0, None, 3.0], [4.0, 5.0]])
    corpus = ArrowCorpus(tmp_path / "c")
    np.testing.assert_array_equal(corpus.item(0).target[0], [1.0, np.nan, 3.0])
    np.testing.assert_array_equal(corpus.lengths, [3, 2])


def test_multivariate_targets_and_covariates(tmp_path):
    rng = np.random.default_rng(0)
    targets = [rng.normal(size=(3, n)).astype("float32") for n in (20, 30)]
    past = [rng.normal(size=(1, n)).astype("float32") for n in (20, 30)]
    future = [rng.normal(size=(2, n)).astype("float32") for n in (20, 30)]
    write_corpus(tmp_path / "c", targets, past_feat_dynamic_real=past, feat_dynamic_real=future)
    corpus = ArrowCorpus(tmp_path / "c")
    np.testing.assert_array_equal(corpus.lengths, [20, 30])
    item = corpus.item(1)
    np.testing.assert_array_equal(item.target, targets[1])
    np.testing.assert_array_equal(item.past_covariates, past[1])
    np.testing.assert_array_equal(item.future_covariates, future[1])


def test_datasetdict_uses_train_split(tmp_path):
    rows = random_walks(4, 10, 10)
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"target": rows}),
                          "test": datasets.Dataset.from_dict({"target": rows[:1]})}).save_to_disk(str(tmp_path / "d"))
    assert len(ArrowCorpus(tmp_path / "d")) == 4


def test_opening_is_lazy(tmp_path):
    # 20k series x 500 floats = 40 MB of values; opening must not allocate them.
    write_corpus(tmp_path / "big", [np.ones(500, dtype="float32")] * 20_000)
    before = pa.total_allocated_bytes()
    corpus = ArrowCorpus(tmp_path / "big")
    assert pa.total_allocated_bytes() - before < 1_000_000
    assert len(corpus) == 20_000 and corpus.lengths.sum() == 10_000_000


@pytest.mark.parametrize(
    "make, fragments",
    [
        (lambda p: None, ["does not exist"]),
        (lambda p: p.mkdir(), ["is empty", "save_to_disk"]),
        (lambda p: (p.mkdir(), (p / "x.csv").write_text("a,b\n")), ["not a saved `datasets` folder"]),
        (lambda p: write_corpus(p, [[1.0]], ) and None, []),  # valid: control case
        (lambda p: datasets.Dataset.from_dict({"values": [[1.0, 2.0]]}).save_to_disk(str(p)),
         ["no 'target' column", "values"]),
        (lambda p: datasets.Dataset.from_dict({"target": [["a", "b"]]}).save_to_disk(str(p)),
         ["column 'target' has type", "expected a list of numbers"]),
        (lambda p: datasets.Dataset.from_dict({"target": [1.0, 2.0]}).save_to_disk(str(p)),
         ["column 'target' has type double"]),
        (lambda p: datasets.DatasetDict({"test": datasets.Dataset.from_dict({"target": [[1.0]]})}
                                        ).save_to_disk(str(p)), ["splits ['test']", "'train' split"]),
    ],
)
def test_bad_corpora_get_clear_errors(tmp_path, make, fragments):
    path = tmp_path / "data"
    make(path)
    if not fragments:
        assert len(ArrowCorpus(path)) == 1
        return
    with pytest.raises(DataError) as err:
        ArrowCorpus(path)
    for fragment in [str(path), *fragments]:
        assert fragment in str(err.value)


def test_corrupted_arrow_file(tmp_path):
    write_corpus(tmp_path / "c", random_walks(10, 50, 60))
    arrow = next((tmp_path / "c").glob("*.arrow"))
    arrow.write_bytes(arrow.read_bytes()[:100])
    with pytest.raises(DataError, match="could not be read"):
        ArrowCorpus(tmp_path / "c")


def test_ragged_variates_name_the_row(tmp_path):
    write_corpus(tmp_path / "c", [[[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0, 3.0], [4.0]]])
    corpus = ArrowCorpus(tmp_path / "c")
    corpus.item(0)
    with pytest.raises(DataError, match="row 1.*different lengths"):
        corpus.item(1)


def test_covariate_length_mismatch_names_the_row(tmp_path):
    write_corpus(tmp_path / "c", [[1.0, 2.0, 3.0]], feat_dynamic_real=[[[1.0, 2.0]]])
    with pytest.raises(DataError, match="row 0: 'feat_dynamic_real' has length 2 but 'target' has length 3"):
        ArrowCorpus(tmp_path / "c").item(0)

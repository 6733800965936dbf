import gzip
import random
import tracemalloc

import pytest

from protein_performer.data import DEFAULT_CORPUS_PATH, FastaError, FastaReader, read_fasta


def write(path, text, *, gz=False):
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


GOOD = """>sp1 first protein
MKTAY
iakqr

>sp2
ACDEFGHIKLMNPQRSTVWY
BOUXZ
>sp3 third
mm
"""


def test_parses_ids_descriptions_lines_and_upper_cases(tmp_path):
    reader = FastaReader(write(tmp_path / "a.fasta", GOOD))
    records = list(reader)
    assert [r.id for r in records] == ["sp1", "sp2", "sp3"]
    assert records[0].description == "sp1 first protein"
    assert [r.line for r in records] == [1, 5, 8]
    assert [r.sequence for r in records] == ["MKTAYIAKQR", "ACDEFGHIKLMNPQRSTVWYBOUXZ", "MM"]
    assert reader.stats.records == 3
    assert reader.stats.residues == 10 + 25 + 2
    assert reader.stats.lines == 9
    assert reader.stats.skipped_records == 0


def test_gzip_is_detected_by_content(tmp_path):
    plain = list(read_fasta(write(tmp_path / "a.fasta", GOOD)))
    # Named without .gz on purpose: detection must use the magic bytes.
    gz = list(read_fasta(write(tmp_path / "b.fa", GOOD, gz=True)))
    assert gz == plain


def test_reader_can_be_iterated_twice(tmp_path):
    reader = FastaReader(write(tmp_path / "a.fasta", GOOD))
    assert list(reader) == list(reader)
    assert reader.stats.records == 3  # a fresh count per pass, not 6


def error_of(path, **kwargs) -> FastaError:
    with pytest.raises(FastaError) as info:
        list(FastaReader(path, **kwargs))
    err = info.value
    assert isinstance(err, ValueError)
    assert str(path) in str(err)
    assert "skip_invalid=True" in str(err)  # says what to do
    return err


def test_invalid_letter_names_file_line_and_column(tmp_path):
    path = write(tmp_path / "bad.fasta", ">ok\nMKT\n>p2 x\nACDEF\nGHJKL\nMN\n")
    err = error_of(path)
    assert err.line == 5
    assert "line 5" in str(err) and "'J'" in str(err) and "column 3" in str(err) and "'p2'" in str(err)


def test_invalid_letter_on_first_sequence_line_of_gz(tmp_path):
    path = write(tmp_path / "bad.fasta.gz", ">a\nMKT\n>b\nMK1T\n", gz=True)
    err = error_of(path)
    assert err.line == 4 and "'1'" in str(err)


def test_unicode_that_upper_cases_to_a_letter_is_still_invalid(tmp_path):
    # U+0131 (dotless i).upper() == 'I': validating after upper-casing would let it through.
    err = error_of(write(tmp_path / "u.fasta", ">a\nMK\u0131T\n"))
    assert err.line == 2


def test_empty_record(tmp_path):
    err = error_of(write(tmp_path / "e.fasta", ">a\nMK\n>b\n\n>c\nMK\n"))
    assert err.line == 3 and "'b'" in str(err) and "no sequence" in str(err)
    err = error_of(write(tmp_path / "e2.fasta", ">a\nMK\n>last\n"))
    assert err.line == 3


def test_duplicate_id(tmp_path):
    err = error_of(write(tmp_path / "d.fasta", ">a x\nMK\n>b\nMK\n>a y\nLL\n"))
    assert err.line == 5 and "'a'" in str(err) and "line 1" in str(err)
    assert len(list(FastaReader(tmp_path / "d.fasta", check_duplicates=False))) == 3


def test_text_before_first_header(tmp_path):
    err = error_of(write(tmp_path / "p.fasta", "\n# made by hand\n>a\nMK\n"))
    assert err.line == 2 and "before the first '>'" in str(err)


def test_header_without_id(tmp_path):
    err = error_of(write(tmp_path / "h.fasta", ">a\nMK\n>  \nMK\n"))
    assert err.line == 3


def test_skip_invalid_counts_each_kind(tmp_path):
    text = (
        "junk line\n"  # 1: preamble
        ">a\nMKT\n"  # 2: ok
        ">b\nMKJ\n"  # 4: invalid letter
        ">c\n"  # 6: empty
        ">a\nLL\n"  # 7: duplicate of a
        ">\nMK\n"  # 9: no id
        ">d\nmk\n"  # 11: ok
    )
    reader = FastaReader(write(tmp_path / "s.fasta", text), skip_invalid=True)
    records = list(reader)
    assert [(r.id, r.sequence, r.line) for r in records] == [("a", "MKT", 2), ("d", "MK", 11)]
    s = reader.stats
    assert (s.invalid_letter, s.empty, s.duplicate, s.missing_id, s.preamble_lines) == (1, 1, 1, 1, 1)
    assert s.skipped_records == 4 and s.records == 2 and s.residues == 5
    assert s.as_dict()["skipped_records"] == 4


def test_large_file_streams_in_bounded_memory_with_exact_lines(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "big.fasta"
    n, bad_record = 20_000, 17_321
    lines_so_far, bad_line = 0, None
    with open(path, "w") as f:
        for i in range(n):
            seq = "".join(rng.choices("ACDEFGHIKLMNPQRSTVWY", k=rng.randint(100, 400)))
            rows = [seq[j : j + 60] for j in range(0, len(seq), 60)]
            if i == bad_record:
                rows[2] = rows[2][:10] + "@" + rows[2][11:]
                bad_line = lines_so_far + 1 + 3  # header, then third sequence line
            f.write(f">r{i}\n" + "\n".join(rows) + "\n")
            lines_so_far += 1 + len(rows)
    size = path.stat().st_size
    assert size > 5_000_000

    # No duplicate check, so nothing grows with the file: peak memory is about one read buffer
    # plus one record (holding all records would need more than the file size).
    reader = FastaReader(path, skip_invalid=True, check_duplicates=False)
    tracemalloc.start()
    count = sum(1 for _ in reader)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == n - 1 and reader.stats.invalid_letter == 1
    assert reader.stats.lines == lines_so_far
    assert peak < size / 20, (peak, size)

    with pytest.raises(FastaError) as info:
        list(FastaReader(path))
    assert info.value.line == bad_line and "column 11" in str(info.value)


def test_generator_is_lazy(tmp_path):
    path = write(tmp_path / "a.fasta", GOOD + ">bad\nMKJ\n")
    records = read_fasta(path)
    assert next(records).id == "sp1"  # the bad record later in the file is not reached yet


def test_shipped_corpus_is_clean():
    reader = FastaReader(DEFAULT_CORPUS_PATH)
    lengths = [len(r.sequence) for r in reader]
    assert len(lengths) == 40_000
    assert reader.stats.residues == 16_361_242 and reader.stats.skipped_records == 0
    assert min(lengths) == 30 and max(lengths) == 22_152

"""benchmarks.usf_search end to end on a small oracle problem: its table, plot and the quantities it reports."""

from benchmarks import usf_search


def test_usf_search_benchmark_runs_and_reports(tmp_path):
    out = usf_search.main(["--nfe", "4", "--budget", "10", "--factor", "2", "--n-search", "16", "--n-fresh", "16",
                           "--out", str(tmp_path)])
    (row,) = out["rows"]
    assert row["nfe"] == 4 and row["configs"] > 20
    assert row["evals with predictor"] == 10 and len(out["histories"]["2-D mixture (exact)"][4]["no_predictor"]) == 20
    hand, searched = (float(v) for v in row["search-noise err (hand-made / searched)"].split(" / "))
    assert 0 < searched < 1 and 0 < hand < 1 and 0 < row["searched err"] < 1
    assert -1.0 <= row["kendall tau (held out)"] <= 1.0
    for name in ("results.csv", "results.md", "histories.json", "usf_search.png"):
        assert (tmp_path / name).is_file()


def test_evaluations_to_reach():
    assert usf_search.evaluations_to_reach([3.0, 2.0, 2.0, 1.0], 2.0) == 2
    assert usf_search.evaluations_to_reach([3.0, 2.5], 2.0) is None

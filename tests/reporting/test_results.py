"""results.json's blocks from hand-made rows and measurements, the printed table and the plot."""

from __future__ import annotations

import pytest

from mammoth.reporting.results import ONLY_AT_END_NOTE, Measurements, build_results, format_table, results_figure

ROWS = [[90.0], [60.0, 80.0], [30.0, 50.0, 70.0]]
MEASURED = Measurements(
    random_init={"class_il": [10.0, 20.0, 5.0]}, future={"class_il": [[40.0, 1.0], [15.0], []]},
    top5=[[99.0], [90.0, 96.0], [80.0, 85.0, 90.0]], test_sizes=[100, 300, 100],
    train_seconds=[1.5, 2.0, 2.5], peak_rss_mb=[700.0, 720.0, 730.0],
)


def test_every_metric_of_a_block_from_hand_computed_values() -> None:
    block = build_results({"class_il": ROWS}, 3, measured=MEASURED)["class_il"]
    assert block["matrix"] == [[90.0, 40.0, 1.0], [60.0, 80.0, 15.0], [30.0, 50.0, 70.0]]
    assert block["average"] == pytest.approx(50.0)
    assert block["average_incremental"] == pytest.approx((90 + 70 + 50) / 3)
    # forward transfer: (A[0][1] - 20) + (A[1][2] - 5) = 20 + 10, / 2
    assert block["forward_transfer"] == pytest.approx(15.0) and block["random_init"] == [10.0, 20.0, 5.0]
    # old after task 2: (30 * 100 + 50 * 300) / 400 = 45; after task 1: 60
    assert block["old_accuracy_per_task"] == [None, 60.0, 45.0] and block["old_accuracy"] == 45.0
    assert block["new_accuracy_per_task"] == [90.0, 80.0, 70.0] and block["new_accuracy"] == 70.0
    assert block["top5"] == pytest.approx(85.0) and block["top5_per_task"] == pytest.approx([99.0, 93.0, 85.0])
    assert block["forgetting"] == pytest.approx(((90 - 30) + (80 - 50)) / 2)
    assert block["forgetting_over"] == "every task but the last, from the rows after each task"


def test_tasks_of_unequal_size_also_report_the_averages_over_examples() -> None:
    # B50 Inc10 in miniature: the first task has 5 times the test examples of each later one
    measured = Measurements(test_sizes=[500, 100, 100], uneven_tasks=True)
    results = build_results({"class_il": ROWS, "task_il": ROWS}, 3, measured=measured,
                            dataset={"classes_per_task": [50, 10, 10]})
    block = results["class_il"]
    # after task 2: (60 * 500 + 80 * 100) / 600 = 38000 / 600; after task 3: (30*500 + 50*100 + 70*100) / 700 = 27000 / 700
    assert block["average_weighted_per_task"] == pytest.approx([90.0, 38000 / 600, 27000 / 700])
    assert block["average_weighted"] == pytest.approx(27000 / 700) and block["average"] == pytest.approx(50.0)
    assert block["average_incremental_weighted"] == pytest.approx((90 + 38000 / 600 + 27000 / 700) / 3)
    assert results["task_il"]["average_weighted"] == pytest.approx(27000 / 700)
    # forgetting and BWT stay per task: (90 - 30) and (80 - 50), averaged
    assert block["forgetting"] == pytest.approx(45.0) and block["bwt"] == pytest.approx(-45.0)
    assert "average_weighted" not in build_results({"class_il": ROWS}, 3, measured=MEASURED)["class_il"]
    assert format_table({"class_il": ROWS}, 3, measured).splitlines()[-1].endswith("over examples 38.57")
    heat, curves = results_figure(results).axes[:2]
    assert [label.get_text() for label in heat.get_xticklabels()] == ["1\n(50)", "2\n(10)", "3\n(10)"]
    assert curves.get_lines()[-1].get_label() == "Class-IL over examples"
    assert list(curves.get_lines()[-1].get_ydata()) == pytest.approx([90.0, 38000 / 600, 27000 / 700])


def test_resources_and_what_the_blocks_are_of() -> None:
    results = build_results({"class_il": ROWS}, 3, measured=MEASURED)
    assert results["resources"] == {
        "train_seconds": 6.0, "train_seconds_per_task": [1.5, 2.0, 2.5], "peak_rss_mb": 730.0,
        "peak_rss_mb_per_task": [700.0, 720.0, 730.0], "peak_cuda_mb": None, "peak_cuda_mb_per_task": None,
    }
    assert results["evaluated_on"] == "test" and results["test_sizes"] == [100, 300, 100] and "test" not in results
    validated = build_results({"class_il": ROWS}, 3, measured=Measurements(validation=True, final_test={"class_il": [20.0, 40.0, 60.0]}))
    assert validated["evaluated_on"] == "validation" and validated["test"] == {"class_il": {"accuracies": [20.0, 40.0, 60.0], "average": 40.0}}


def test_a_method_that_trains_only_at_the_end_has_no_forgetting_nor_transfer() -> None:
    block = build_results({"class_il": ROWS}, 3, measured=Measurements(trains_only_at_end=True, random_init=MEASURED.random_init,
                                                                       future=MEASURED.future))["class_il"]
    assert (block["forgetting"], block["bwt"], block["forward_transfer"]) == (None, None, None)
    assert block["forgetting_over"] == ONLY_AT_END_NOTE and block["average"] == pytest.approx(50.0)
    table = format_table({"class_il": ROWS}, 3, Measurements(trains_only_at_end=True))
    assert table.splitlines()[-1] == " Class-IL: average 50.00  forgetting -  bwt -"


def test_the_table_adds_forward_transfer_and_the_plot_the_old_and_new_curves() -> None:
    assert format_table({"class_il": ROWS}, 3, MEASURED).splitlines()[-1] == (
        " Class-IL: average 50.00  forgetting 45.00  bwt -45.00  fwt 15.00")
    figure = results_figure(build_results({"class_il": ROWS}, 3, measured=MEASURED))
    heat, curves = figure.axes[:2]  # then the colour bar
    assert [line.get_label() for line in curves.get_lines()] == ["Class-IL", "Class-IL old classes", "Class-IL new classes"]
    assert list(curves.get_lines()[1].get_xdata()) == [2, 3]  # no old classes after the first task
    assert heat.get_xlabel().endswith("forgetting 45.0  BWT -45.0  FWT 15.0  avg incr. 70.0  top-5 85.0")


NME_ROWS = [[95.0], [70.0, 90.0], [50.0, 60.0, 80.0]]


def test_the_nearest_mean_accuracy_is_a_block_of_its_own_with_its_own_top5() -> None:
    measured = Measurements(top5=MEASURED.top5, nme_top5=[[100.0], [95.0, 97.0], [90.0, 92.0, 94.0]])
    results = build_results({"class_il": ROWS, "task_il": ROWS, "nme_class_il": NME_ROWS}, 3, measured=measured)
    block = results["nme_class_il"]
    assert block["average"] == pytest.approx((50 + 60 + 80) / 3)
    assert block["matrix"] == [[95.0, None, None], [70.0, 90.0, None], [50.0, 60.0, 80.0]]
    assert block["forgetting"] == pytest.approx(((95 - 50) + (90 - 60)) / 2)
    assert block["top5"] == pytest.approx(92.0) and block["top5_per_task"] == pytest.approx([100.0, 96.0, 92.0])
    assert results["class_il"]["top5"] == pytest.approx(85.0) and "top5" not in results["task_il"]
    table = format_table({"class_il": ROWS, "nme_class_il": NME_ROWS}, 3, measured).splitlines()
    assert table[1].endswith("|  Class-IL NME Class-IL") and table[-1] == (
        "NME Class-IL: average 63.33  forgetting 37.50  bwt -37.50")
    curves = results_figure(results).axes[1]
    assert [line.get_label() for line in curves.get_lines()][:3] == ["Class-IL", "Task-IL", "NME Class-IL"]
    assert list(curves.get_lines()[2].get_ydata()) == pytest.approx([95.0, 80.0, 190 / 3])
def test_an_online_run_plots_its_accuracy_over_the_stream() -> None:
    from mammoth.reporting.metrics import stream_metrics

    online = stream_metrics([10, 20, 30], [[50.0], [80.0, 40.0], [20.0, 60.0]], 30, 2.0)
    figure = results_figure(build_results({"class_il": ROWS}, 3, online=online))
    stream = figure.axes[2]
    assert stream.get_title() == "anytime accuracy 50.0"
    line = stream.get_lines()[0]
    assert list(line.get_xdata()) == [10, 20, 30] and list(line.get_ydata()) == [50.0, 60.0, 40.0]
    assert len(results_figure(build_results({"class_il": ROWS}, 3)).axes) == 3  # heatmap, colour bar, curves

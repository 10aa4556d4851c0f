"""The summary of a failed cell is never empty (``jobs.executor.summarise_error``)."""

from jobs.executor import CellFailure, summarise_error

#: What papermill reports for a cell that failed without an ``error`` output.
NO_OUTPUT = {"cell_index": 1, "ename": "CellExecutionError", "evalue": "", "traceback": ""}
USAGE = "UsageError: Line magic function `%undefined-line-magic` not found.\n"


def test_an_error_output_is_kept_as_papermill_reported_it():
    error = {"cell_index": 3, "ename": "KeyError", "evalue": "", "traceback": "Traceback..."}
    failure = CellFailure(ename="KeyError", evalue="", stderr="noise\n")
    assert summarise_error(error, failure) == error


def test_the_execute_reply_names_a_failure_without_an_error_output():
    failure = CellFailure(
        ename="UsageError",
        evalue="Line magic function `%undefined-line-magic` not found.",
        stderr=USAGE,
    )
    summary = summarise_error(NO_OUTPUT, failure)
    assert summary["ename"] == "UsageError"
    assert summary["evalue"] == "Line magic function `%undefined-line-magic` not found."
    assert summary["cell_index"] == 1
    # No traceback came with it: the run page shows what the cell printed instead.
    assert summary["traceback"] == USAGE.strip()


def test_without_a_reply_the_last_stderr_line_names_the_exception():
    failure = CellFailure(ename="<Error>", stderr="\x1b[0;31mwarming up\n" + USAGE + "\n\n")
    summary = summarise_error(NO_OUTPUT, failure)
    assert (summary["ename"], summary["evalue"]) == (
        "UsageError",
        "Line magic function `%undefined-line-magic` not found.",
    )
    assert summary["traceback"] == "warming up\n" + USAGE.strip()


def test_otherwise_the_last_lines_of_stderr_are_the_message():
    stderr = "".join(f"line {i}\n" for i in range(1, 9)) + "\x1b[1mthe kernel gave up\x1b[0m\n"
    summary = summarise_error(NO_OUTPUT, CellFailure(stderr=stderr))
    assert summary["ename"] == "CellExecutionError"
    assert summary["evalue"] == "line 5\nline 6\nline 7\nline 8\nthe kernel gave up"


def test_a_long_stderr_tail_is_cut_to_its_end():
    summary = summarise_error(NO_OUTPUT, CellFailure(stderr="x" * 10_000 + "END\n"))
    assert len(summary["evalue"]) == 2000 and summary["evalue"].endswith("END")


def test_a_failure_with_nothing_to_say_still_says_so():
    for failure in (None, CellFailure(), CellFailure(ename="<Error>", stderr="  \n")):
        summary = summarise_error(NO_OUTPUT, failure)
        assert summary["ename"] == "CellExecutionError"
        assert summary["evalue"] == (
            "The cell failed without an error message or any output on stderr."
        )


def test_an_empty_exception_name_is_filled_in():
    summary = summarise_error({**NO_OUTPUT, "ename": ""}, CellFailure(stderr=USAGE))
    assert summary["ename"] == "UsageError"

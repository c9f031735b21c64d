"""`make faults`: the cluster fault test, on its own (it starts a 3-node broker cluster, so it is
not part of `make test`'s session). Its figures are shown at the end of pytest's output."""
from faults import FIGURES


def pytest_terminal_summary(terminalreporter, config):
    if FIGURES:
        terminalreporter.section("cluster fault figures")
        for line in FIGURES:
            terminalreporter.write_line(line)

"""Fault injection end to end (sandbox/scenarios.py): every platform's webhooks while Fullwhere, the
platform APIs and SQS fail, the retry worker crashes mid-batch and poisoned messages sit in its queue.

The scenario runner does the checking (every guest in Fullwhere exactly once, nothing lost, only permanent
failures dead-lettered, EMF metrics equal to the log lines) and proves its own checks can fail (negative
controls). ``python -m sandbox.scenarios --large`` runs ten times as much.
"""

from __future__ import annotations

from sandbox import scenarios
from sandbox.samples import SAMPLES


def test_every_promise_holds_while_everything_around_the_bridge_fails():
    report = scenarios.run(scenarios.SMALL, controls=True)
    print(report.render())  # the tally, in the test's output

    assert report.problems == []
    totals = report.totals
    assert totals["lost"] == 0 and totals["duplicated"] == 0
    assert totals["imported"] + totals["dead-lettered"] + totals["ignored"] == totals["sent"]
    # Every platform took part; OPERA through the scheduled pull, Simphony as notifications only.
    assert set(report.rows) == set(SAMPLES)
    assert report.rows["oracle"]["imported"] >= scenarios.SMALL.guests
    assert report.rows["simphony"]["ignored"] == report.rows["simphony"]["sent"] > 0
    # The guests the platforms do not have, and the injected rejections, are the dead letters; all permanent.
    assert totals["dead-lettered"] >= 4 * scenarios.SMALL.missing
    assert "unrouted" not in scenarios.PERMANENT_KINDS and "exhausted" not in scenarios.PERMANENT_KINDS
    assert set(report.dead_letter_kinds) <= {*scenarios.PERMANENT_KINDS, "exhausted"}
    assert report.dead_letter_kinds["poisoned"] >= 1
    # Not the event's fault (a platform this deployment does not configure): held, then dead-lettered only once
    # its horizon had passed. The verdict allows no other "exhausted" letter: no guest outlasted the horizon
    # (a crash mid-batch may write that one letter twice).
    assert report.dead_letter_kinds["exhausted"] >= 1
    assert report.log_outcomes["held"] >= 1
    # The faults really happened: every emulator answered wrongly, SQS was down, the worker crashed.
    assert all(report.faults_consumed[name] > 0
               for name in ("fullwhere", "ubereats", "mews", "thefork", "meta", "sevenrooms", "como", "oracle"))
    assert totals["redelivered"] > 0  # 503s during the SQS outage, delivered again by the "platforms"
    assert report.worker["crashes"] == scenarios.SMALL.crashes and report.crashed_records > 0
    assert report.log_outcomes["queued"] > 0 and report.log_outcomes["retried"] > 0
    assert report.metric_outcomes == report.log_outcomes
    # Guests without email or phone whose import's answer was lost were looked up, not imported twice:
    # those whose import had landed were found, the others imported once.
    expected = scenarios.SMALL.in_doubt * len(scenarios.CONTACTLESS)
    assert report.in_doubt["earlier_import_landed"] >= expected
    assert report.in_doubt["earlier_import_had_not_landed"] >= expected
    assert report.controls == {"duplicate detected": True, "loss detected": True, "exhausted guest detected": True}
    assert report.ok


def test_report_adds_up_and_prints_a_table():
    report = scenarios.Report(scale=scenarios.SMALL)
    report.rows["mews"].update(sent=3, imported=2, **{"dead-lettered": 1})
    report.rows["simphony"].update(sent=1, ignored=1)
    assert report.ok
    table = report.table().splitlines()
    assert table[0].startswith("| platform") and table[-1].split("|")[1].strip() == "total"
    assert [cell.strip() for cell in table[-1].split("|")[2:5]] == ["4", "2", "1"]

    report.rows["mews"].update(lost=1, sent=1)
    assert not report.ok  # one more sent and none of imported, dead-lettered or ignored: lost

"""Summarize a tempest (stestr) run of tempest.api.identity for yunhe.

usage: summarize.py ALL_TESTS EXPECTED_FAILURES SUBUNIT_FILE OUT_DIR [SERVICE GOAL LIST_MAX [NOT_APPLICABLE]]
(SERVICE, GOAL and LIST_MAX default to identity, 0.95 and 0.20.)

NOT_APPLICABLE: optional file of regular expressions (one per line, '#' comments) matched
against tempest's skip reasons. A test tempest skips for such a reason (a service this cloud
does not run yet, a feature tempest.conf declares absent, a second compute host) is reported
as "not applicable here", by reason, and left out of the pass ratio; every other skip counts
as not passed.

ALL_TESTS: `tempest run --list-tests` output (ids with [attrs]).
EXPECTED_FAILURES: one test id per line (class.method, no [attrs]) + ' # reason'.
Writes OUT_DIR/failures.txt (tracebacks of the failing tests) and prints the totals.
Exit status: 0 when the gate passes (pass ratio >= 95% and list <= 20%), else 1.
"""
import re
import sys

import subunit
import testtools


def base_id(test_id):
    return re.sub(r"\[.*\]$", "", test_id.strip())


def read_expected(path):
    entries = []
    for line in open(path):
        entry = line.split("#", 1)[0].strip()
        if entry:
            reason = line.split("#", 1)[1].strip() if "#" in line else ""
            entries.append((entry, reason))
    return entries


def skip_reason(test):
    for name in ("reason", "traceback"):
        content = test["details"].get(name)
        if content is not None:
            try:
                return content.as_text().strip().splitlines()[-1]
            except Exception:
                pass
    return ""


def main():
    all_path, xf_path, subunit_path, out_dir = sys.argv[1:5]
    service = sys.argv[5] if len(sys.argv) > 5 else "identity"
    goal = float(sys.argv[6]) if len(sys.argv) > 6 else 0.95
    list_max = float(sys.argv[7]) if len(sys.argv) > 7 else 0.20
    all_tests = sorted({base_id(l) for l in open(all_path) if l.startswith("tempest.")})
    expected = read_expected(xf_path)
    listed = {e for e, _ in expected}
    stale = sorted(listed - set(all_tests))
    excluded = [t for t in all_tests if t in listed]
    to_run = [t for t in all_tests if t not in listed]

    results = {}   # base id -> status
    details = {}   # id -> traceback text
    fixtures = []  # setUpClass / tearDownClass failures
    skipped_classes = {}  # classes whose setUpClass skipped -> reason
    skip_reasons = {}  # base id -> reason

    def on_test(test):
        tid = test["id"]
        status = test["status"]
        if status == "exists":
            return
        text = ""
        for name, content in test["details"].items():
            try:
                body = content.as_text()
            except Exception:  # binary attachment
                continue
            if name in ("traceback", "reason") or status not in ("success", "skip"):
                if name in ("traceback", "reason"):
                    text += "--- %s ---\n%s\n" % (name, body)
        if tid.startswith(("setUpClass", "tearDownClass")) or "(" in tid:
            if status not in ("success", "skip"):
                fixtures.append((tid, status, text))
            elif status == "skip" and "(" in tid:
                # A class skipped as a whole: its tests are skips, not failures.
                skipped_classes[tid[tid.index("(") + 1:tid.rindex(")")]] = skip_reason(test)
            return
        results[base_id(tid)] = status
        if status == "skip":
            skip_reasons[base_id(tid)] = skip_reason(test)
        if status not in ("success", "skip"):
            details[base_id(tid)] = text

    with open(subunit_path, "rb") as stream:
        case = subunit.ByteStreamToStreamResult(stream, non_subunit_name="stdout")
        result = testtools.StreamToDict(on_test)
        result.startTestRun()
        case.run(result)
        result.stopTestRun()

    for t in to_run:
        if t not in results and t.rsplit(".", 1)[0] in skipped_classes:
            results[t] = "skip"
            skip_reasons[t] = skipped_classes[t.rsplit(".", 1)[0]]
    na_patterns = []
    if len(sys.argv) > 8 and sys.argv[8]:
        for line in open(sys.argv[8]):
            line = line.split("#", 1)[0].strip()
            if line:
                na_patterns.append(re.compile(line))
    not_applicable = [t for t in to_run if results.get(t) == "skip"
                      and any(p.search(skip_reasons.get(t, "")) for p in na_patterns)]
    na_set = set(not_applicable)
    passed = [t for t in to_run if results.get(t) in ("success", "xfail")]
    skipped = [t for t in to_run if results.get(t) == "skip" and t not in na_set]
    failed = [t for t in to_run if results.get(t) not in ("success", "xfail", "skip")]
    not_run = [t for t in failed if t not in results]
    xf_passing = [t for t in excluded if results.get(t) == "success"]

    with open("%s/failures.txt" % out_dir, "w") as f:
        for tid, status, text in fixtures:
            f.write("=== %s: %s\n%s\n" % (tid, status, text))
        for t in failed:
            f.write("=== %s: %s\n%s\n" % (t, results.get(t, "not run (class fixture failed?)"),
                                          details.get(t, "")))
    with open("%s/results.txt" % out_dir, "w") as f:
        for t in all_tests:
            st = "expected-failure(excluded)" if t in listed else results.get(t, "not-run")
            if t in na_set:
                st = "not-applicable"
            f.write("%s %s\n" % (st, t))

    total = len(all_tests)
    denominator = total - len(excluded) - len(not_applicable)
    ratio = (len(passed) / denominator) if denominator else 0.0
    list_ratio = len(excluded) / total if total else 1.0

    print("tempest.api.%s: %d tests; expected-failure list: %d entries, %d matching (%.1f%% of all; limit %d%%)"
          % (service, total, len(expected), len(excluded), 100 * list_ratio, round(100 * list_max)))
    for s in stale:
        print("  warning: expected-failure entry matches no test: %s" % s)
    if not_applicable:
        by_reason = {}
        for t in not_applicable:
            by_reason.setdefault(skip_reasons.get(t, ""), []).append(t)
        print("not applicable here (tempest skipped them for a reason in %s): %d"
              % (sys.argv[8], len(not_applicable)))
        for reason, tests in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            print("  %4d  %s" % (len(tests), reason[:150]))
    print("ran (not on the list, applicable): %d; passed %d, failed %d, skipped %d"
          % (denominator, len(passed), len(failed) - len(not_run), len(skipped)))
    if not_run:
        print("  %d tests produced no result (their class fixture failed): counted as failed" % len(not_run))
    for tid, status, _ in fixtures:
        print("  class fixture %s: %s" % (status, tid))
    for t in failed:
        print("  FAIL %s" % t)
    for t in skipped:
        print("  SKIP %s (a skip counts against the pass ratio)" % t)
    for t in xf_passing:
        print("  note: listed as expected failure but not run; remove it from the list if it passes: %s" % t)
    print("pass ratio: %d / %d = %.1f%% (goal >= %d%%; skips count as not passed)"
          % (len(passed), denominator, 100 * ratio, round(100 * goal)))

    ok = ratio >= goal and list_ratio <= list_max and denominator > 0
    print("tempest %s: %s" % (service, "OK" if ok else "BELOW THE BAR"))
    print("%d passed, %d failed, %d skipped, %d not applicable"
          % (len(passed), len(failed), len(skipped), len(not_applicable)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

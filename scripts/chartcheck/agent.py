"""charts/stint-agent and examples/kubernetes/agent-app.yaml: every value
set in ci/ rendered, linted and validated for the oldest Kubernetes it
supports and the newest, then held to agent_pod.py's checks; the refusals
and mutations of agent_cases.py; and, with STINT_BIN, `stint agent --check`
on every rendered agent.yaml and the example's.
"""
import copy
import glob
import hashlib
import os

import yaml
import helm_python as helm

from common import LATEST, STINT_BIN, ChartUnderTest, StrictLoader, check_value_set, expect_refusal, fail, run_stint
from agent_pod import check_agent_pod
from agent_cases import ACCEPTED, AWS, MUTATIONS, REFUSALS, base

CHART = "charts/stint-agent"
EXAMPLE = "examples/kubernetes/agent-app.yaml"

checked_configs = set()
# Set once STINT_BIN turned out not to know `agent --check`.
lacks_check = []


def check_config_with_stint(where, text):
    """`stint agent --check --config FILE` on a rendered agent.yaml (once per
    distinct text)."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    if not STINT_BIN or digest in checked_configs or lacks_check:
        return
    checked_configs.add(digest)
    run = run_stint(["agent", "--check", "--config"], text, "agent.yaml")
    if run.returncode == 0:
        return
    err = run.stderr.strip()
    if "--check" in err and ("unexpected argument" in err or "unrecognized" in err):
        # Said once: every other agent.yaml would fail the same way.
        lacks_check.append(where)
        fail("STINT_BIN", f"{STINT_BIN} does not know `stint agent --check` yet (it is being added on main), so no "
                          f"rendered agent.yaml was checked by stint: build stint from a main that has it. "
                          f"stint said: {err.splitlines()[0]}")
    else:
        fail(where, f"stint agent --check refuses the rendered agent.yaml: {err}")


def kube_floor(values, chart_floor):
    """The oldest Kubernetes a value set can render for."""
    agent = values.get("agent") or {}
    if agent.get("nativeSidecar"):
        return "1.29.0"
    if int(agent.get("preStopSleepSeconds") or 0) > 0:
        return "1.30.0"
    return chart_floor


def audience_of(values):
    return (values.get("token") or {}).get("audience", "stint")


def check_objects(where, values, docs, kube):
    text = check_agent_pod(where, docs, audience_of(values), fail)
    if text is not None:
        check_config_with_stint(where, text)


def check_mutations(cut, chart):
    values = {**base(), **AWS}
    good = [d for d in yaml.load_all("\n---\n".join(v for k, v in sorted(cut.render(chart, values, LATEST).items())
                                                    if not k.endswith("NOTES.txt")), Loader=StrictLoader) if d]
    said = []
    check_agent_pod("mutation: none", good, "stint", lambda w, m: said.append(m))
    if said:
        fail(f"{CHART} mutations", f"the unbroken render is reported: {said}")
    for label, mutate, expected in MUTATIONS:
        docs = copy.deepcopy(good)
        mutate(docs)
        said = []
        check_agent_pod(label, docs, "stint", lambda w, m: said.append(m))
        if not any(expected in m for m in said):
            fail(f"{CHART} mutation: {label}", f"not reported with {expected!r}; the checks said {said}")
    print(f"{CHART}: {len(MUTATIONS)} broken renders, each reported by its check")


def check_example():
    docs = [d for d in yaml.load_all(open(EXAMPLE), Loader=StrictLoader) if d]
    text = check_agent_pod(EXAMPLE, docs, "stint", fail)
    if text is not None:
        check_config_with_stint(EXAMPLE, text)
        print(f"{EXAMPLE}: the pattern's checks pass")


def run():
    """Checks the chart and the example; returns (value sets, refusals) checked."""
    cut = ChartUnderTest(CHART, "app", "apps", check_objects)
    with helm.Chart.load(CHART) as chart:
        value_sets = [(os.path.relpath(p, CHART), helm.values_from_yaml(open(p).read()))
                      for p in sorted(glob.glob(f"{CHART}/ci/*.yaml"))]
        if len(value_sets) < 3:
            fail(CHART, "expected at least three value sets in ci/ (files only, AWS endpoint, native sidecar)")
        if not any((v.get("agent") or {}).get("nativeSidecar") for _, v in value_sets):
            fail(CHART, "no value set in ci/ has agent.nativeSidecar")
        if not any((v.get("awsEndpoint") or {}).get("enabled") for _, v in value_sets):
            fail(CHART, "no value set in ci/ has awsEndpoint.enabled")
        refusals = list(REFUSALS)
        for label, values in value_sets:
            floor = kube_floor(values, cut.floor)
            checked = check_value_set(cut, chart, f"{CHART} {label}", values, [floor, LATEST])
            if checked:
                print(f"{CHART} {label}: {', '.join(checked[0])} render, lint and validate on Kubernetes {floor} and {LATEST}")
            if floor != cut.floor:
                # Below its own floor the set must be refused, not rendered wrong.
                refusals.append((f"{label} on Kubernetes {cut.floor}", values, cut.floor,
                                 f"needs Kubernetes {floor.rsplit('.', 1)[0]}"))
        for label, values, kube, expected in refusals:
            expect_refusal(cut, chart, f"{CHART}: {label}", values, expected, kube)
        for label, values in ACCEPTED:
            try:
                chart.validate_schema(values)
                cut.render(chart, values, LATEST)
            except helm.HelmError as e:
                fail(f"{CHART}: accept {label}", f"refused: {e}")
        check_mutations(cut, chart)
    check_example()
    return len(value_sets), len(refusals)

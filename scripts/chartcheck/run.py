"""Entry point of scripts/check-chart: the broker chart, then the agent
chart and its example; one verdict for both."""
import helm_python as helm
from importlib.metadata import version

import common
import broker
import agent

print(f"helm-python-sdk {version('helm-python-sdk')} (Helm SDK {helm.helm_sdk_version()}), "
      f"kubernetes-validate {version('kubernetes-validate')} (Kubernetes {common.chart_floor(broker.CHART)} "
      f"to {common.LATEST}), promql-parser {version('promql-parser')}")
print(f"stint config check and stint agent --check: {common.STINT_BIN}" if common.STINT_BIN
      else "stint config check and stint agent --check: skipped (set STINT_BIN to a built stint)")
broker_sets, broker_refusals = broker.run()
agent_sets, agent_refusals = agent.run()
common.finish(f"{broker_sets + agent_sets} value sets and {broker_refusals + agent_refusals} refusals checked")

"""Entry point of scripts/check-chart."""
import helm_python as helm
from importlib.metadata import version

import common
import broker

print(f"helm-python-sdk {version('helm-python-sdk')} (Helm SDK {helm.helm_sdk_version()}), "
      f"kubernetes-validate {version('kubernetes-validate')} (Kubernetes {common.chart_floor(broker.CHART)} "
      f"to {common.LATEST}), promql-parser {version('promql-parser')}")
print(f"stint config check: {common.STINT_BIN}" if common.STINT_BIN
      else "stint config check: skipped (set STINT_BIN to a built stint)")
broker_sets, broker_refusals = broker.run()
common.finish(f"{broker_sets} value sets and {broker_refusals} refusals checked")

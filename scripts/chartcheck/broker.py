"""charts/stint, the broker: its value sets, what the rendered objects must
be (secure pod defaults, probes, stint.yaml, Services, HPA, PDB,
NetworkPolicy and ServiceMonitor selecting the pods), its Prometheus
Operator objects against a minimal strict schema with every alert
expression parsed by promql-parser, and the values it must refuse.
"""
import glob
import os
import re

import jsonschema
import yaml
import helm_python as helm
import promql_parser

from common import (LATEST, STINT_BIN, ChartUnderTest, StrictLoader, check_value_set, expect_refusal, fail, port_of,
                    run_stint, selects)

CHART = "charts/stint"

# ---------------------------------------------------------------------------
# Minimal strict schemas of the Prometheus Operator objects the chart renders
# (the fields are those of monitoring.coreos.com/v1; anything else is refused).
DURATION = {"type": "string",
            "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
STRLIST = {"type": "array", "items": {"type": "string"}}
META = {"type": "object", "required": ["name", "namespace"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                       "labels": STRMAP, "annotations": STRMAP}}
RELABEL = {"type": "object", "additionalProperties": False, "properties": {
    "sourceLabels": STRLIST, "separator": {"type": "string"}, "targetLabel": {"type": "string"},
    "regex": {"type": "string"}, "modulus": {"type": "integer"}, "replacement": {"type": "string"},
    "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod", "HashMod",
                        "labelmap", "LabelMap", "labeldrop", "LabelDrop", "labelkeep", "LabelKeep",
                        "lowercase", "Lowercase", "uppercase", "Uppercase", "keepequal", "KeepEqual",
                        "dropequal", "DropEqual"]}}}
LABEL_SELECTOR = {"type": "object", "additionalProperties": False, "properties": {
    "matchLabels": STRMAP,
    "matchExpressions": {"type": "array", "items": {"type": "object", "additionalProperties": False,
                                                    "required": ["key", "operator"],
                                                    "properties": {"key": {"type": "string"},
                                                                   "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                                                                   "values": STRLIST}}}}}
CRD_SCHEMAS = {
    "ServiceMonitor": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"}, "metadata": META,
            "spec": {"type": "object", "required": ["selector", "endpoints"], "additionalProperties": False, "properties": {
                "jobLabel": {"type": "string"}, "selector": LABEL_SELECTOR,
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"}, "matchNames": STRLIST}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]}, "interval": DURATION, "scrapeTimeout": DURATION,
                        "honorLabels": {"type": "boolean"}, "relabelings": {"type": "array", "items": RELABEL},
                        "metricRelabelings": {"type": "array", "items": RELABEL}}}}}}}},
    "PrometheusRule": {
        "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"}, "metadata": META,
            "spec": {"type": "object", "required": ["groups"], "additionalProperties": False, "properties": {
                "groups": {"type": "array", "items": {
                    "type": "object", "required": ["name", "rules"], "additionalProperties": False, "properties": {
                        "name": {"type": "string", "minLength": 1}, "interval": DURATION,
                        "rules": {"type": "array", "minItems": 1, "items": {
                            "type": "object", "required": ["expr"], "additionalProperties": False,
                            "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                            "properties": {
                                "alert": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
                                "record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                                "expr": {"type": ["string", "integer"]}, "for": DURATION,
                                "keep_firing_for": DURATION, "labels": STRMAP, "annotations": STRMAP}}}}}}}}}},
}

# Metric names stint registers (src/metrics.rs), with the suffixes the
# exposition adds; plus the two the alerts anticipate.
src = open("src/metrics.rs").read()
registered = set(re.findall(r'register\(\s*"([a-z_]+)"', src))
if not registered:
    fail("src/metrics.rs", "no metric registrations found")
KNOWN_METRICS = {f"stint_{n}{s}" for n in registered for s in ("", "_total", "_bucket", "_sum", "_count")}
ANTICIPATED = {"stint_audit_append_failures_total", "stint_upstream_errors_total"}
noted = set()


def metric_names(expr):
    names = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.append(node.name)
    promql_parser.walk(expr, visit)
    return names


def check_crd(where, doc):
    kind = doc["kind"]
    schema = CRD_SCHEMAS.get(kind)
    if schema is None:
        fail(where, f"no schema for {doc['apiVersion']} {kind}")
        return
    for err in jsonschema.Draft202012Validator(schema).iter_errors(doc):
        fail(where, f"{'.'.join(map(str, err.absolute_path))}: {err.message}")
    if kind != "PrometheusRule":
        return
    for group in doc["spec"].get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            try:
                expr = promql_parser.parse(str(rule["expr"]))
            except ValueError as e:
                fail(where, f"{name}: expr does not parse: {e}: {rule['expr']!r}")
                continue
            for metric in metric_names(expr):
                if not metric.startswith("stint_") or metric in KNOWN_METRICS:
                    continue
                if metric in ANTICIPATED:
                    if metric not in noted:
                        noted.add(metric)
                        print(f"note: alert metric {metric} is not registered in src/metrics.rs yet")
                else:
                    fail(where, f"{name}: unknown metric {metric} (src/metrics.rs registers {sorted(registered)})")
            for key in ("for", "keep_firing_for"):
                value = str(rule.get(key, "0"))
                if not re.fullmatch(r"0+(ms|[smhdwy])?", value):
                    try:
                        promql_parser.parse_duration(value)
                    except ValueError as e:
                        fail(where, f"{name}: {key} {value!r}: {e}")



def check_objects(where, values, docs, kube):
    """Checks across the rendered objects: secure defaults, wiring, stint.yaml."""
    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    if by_kind.get("Secret"):
        fail(where, "the chart rendered a Secret: key material must come from existing Secrets")
    deployments = by_kind.get("Deployment", [])
    if len(deployments) != 1:
        fail(where, f"expected one Deployment, got {len(deployments)}")
        return
    deploy = deployments[0]
    pod = deploy["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    if not selects(deploy["spec"]["selector"]["matchLabels"], pod_labels):
        fail(where, "the Deployment selector does not match its pod labels")
    psc = spec.get("securityContext", {})
    expect = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532}
    for key, want in expect.items():
        if psc.get(key) != want:
            fail(where, f"pod securityContext.{key} is {psc.get(key)!r}, want {want!r}")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fail(where, "pod seccompProfile is not RuntimeDefault")
    containers = {c["name"]: c for c in spec["containers"]}
    stint = containers.get("stint")
    if stint is None:
        fail(where, "no container named stint")
        return
    sc = stint.get("securityContext", {})
    for key, want in {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                      "allowPrivilegeEscalation": False}.items():
        if sc.get(key) != want:
            fail(where, f"container securityContext.{key} is {sc.get(key)!r}, want {want!r}")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        fail(where, "container capabilities do not drop ALL")
    res = stint.get("resources", {})
    if not res.get("requests") or not res.get("limits"):
        fail(where, "container has no resource requests and limits")
    if spec.get("automountServiceAccountToken") is not False and not values.get("automountServiceAccountToken"):
        fail(where, "the service-account token is mounted although automountServiceAccountToken is off")
    ports = {p["name"]: p["containerPort"] for p in stint["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = stint.get(probe, {}).get("httpGet", {})
        if get.get("path") != path or get.get("port") != "admin":
            fail(where, f"{probe} is not GET {path} on the admin port: {get}")
    if "admin" not in ports or "api" not in ports:
        fail(where, f"container ports must be named api and admin: {ports}")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        for m in c.get("volumeMounts", []):
            if m["name"] not in volumes:
                fail(where, f"{c['name']} mounts undefined volume {m['name']}")
    mounts = {m["mountPath"]: m for m in stint.get("volumeMounts", [])}
    if "/tmp" not in mounts:
        fail(where, "no volume at /tmp")
    env_values = {}
    for env in stint.get("env", []):
        env_values[env["name"]] = env.get("value")
        if env["name"] == "STINT_AUDIT_STORE" and "secretKeyRef" not in env.get("valueFrom", {}):
            fail(where, "STINT_AUDIT_STORE must come from a secretKeyRef")
    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    cm_volume = volumes.get("config", {}).get("configMap", {}).get("name")
    if cm_volume not in configmaps:
        fail(where, f"the config volume names ConfigMap {cm_volume!r}, which the chart does not render")
        return
    if mounts.get("/etc/stint", {}).get("readOnly") is not True:
        fail(where, "the ConfigMap is not mounted read-only at /etc/stint")
    cfg = yaml.load(configmaps[cm_volume]["data"]["stint.yaml"], Loader=StrictLoader)
    if port_of(cfg["listen"]) != ports.get("api") or port_of(cfg["admin_listen"]) != ports.get("admin"):
        fail(where, f"stint.yaml listeners {cfg['listen']}, {cfg['admin_listen']} do not match the container ports {ports}")
    for var, key in (("STINT_LISTEN", "listen"), ("STINT_ADMIN_LISTEN", "admin_listen")):
        if env_values.get(var) != cfg[key]:
            fail(where, f"{var}={env_values.get(var)!r} does not match stint.yaml {key}: {cfg[key]!r}")
    for key in ("audit", "signing"):
        path = cfg[key]["key_file"]
        if not any(path.startswith(mp + "/") and mounts[mp].get("readOnly") for mp in mounts):
            fail(where, f"{key}.key_file {path} is not on a read-only mount")
    store = cfg["audit"].get("store")
    if store is None and not any(e["name"] == "STINT_AUDIT_STORE" for e in stint.get("env", [])):
        fail(where, "no audit store: neither audit.store nor STINT_AUDIT_STORE")
    if store and re.match(r"^postgres(ql)?://[^/@?]*:[^/@?]*@", store):
        fail(where, "audit.store in the ConfigMap carries a password")
    if store and store.startswith("sqlite://"):
        path = store[len("sqlite://"):]
        if not any(path.startswith(mp.rstrip("/") + "/") and not mounts[mp].get("readOnly") for mp in mounts):
            fail(where, f"the SQLite file {path} is not on a writable volume")
    if STINT_BIN:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STINT_")}
        env.update({k: v for k, v in env_values.items() if k.startswith("STINT_") and v is not None})
        if store is None:
            env["STINT_AUDIT_STORE"] = "postgres://stint@db.invalid:5432/stint"
        run = run_stint(["config", "check", "--config"], configmaps[cm_volume]["data"]["stint.yaml"], "stint.yaml", env)
        if run.returncode != 0:
            fail(where, f"stint config check refuses the rendered stint.yaml: {run.stderr.strip()}")
    issuers, grants = cfg.get("issuers") or {}, cfg.get("grants") or {}
    if not issuers or not grants:
        fail(where, "stint.yaml has no issuers or no grants")
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    for name, svc in services.items():
        if not selects(svc["spec"]["selector"], pod_labels):
            fail(where, f"Service {name} does not select the pods")
        for p in svc["spec"]["ports"]:
            if p["targetPort"] not in ports:
                fail(where, f"Service {name} targets port {p['targetPort']!r}, which the container lacks")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        if hpa["spec"]["scaleTargetRef"]["name"] != deploy["metadata"]["name"] or "replicas" in deploy["spec"]:
            fail(where, "the HPA must scale the Deployment, which then sets no replicas")
    for kind in ("PodDisruptionBudget",):
        for obj in by_kind.get(kind, []):
            if not selects(obj["spec"]["selector"]["matchLabels"], pod_labels):
                fail(where, f"{kind} does not select the pods")
    for np in by_kind.get("NetworkPolicy", []):
        if not selects(np["spec"]["podSelector"]["matchLabels"], pod_labels):
            fail(where, "the NetworkPolicy does not select the pods")
        ingress_ports = {p["port"] for rule in np["spec"].get("ingress") or [] for p in rule.get("ports", [])}
        extra_ingress = values.get("networkPolicy", {}).get("extraIngress")
        if not extra_ingress and not ingress_ports <= set(ports.values()):
            fail(where, f"the NetworkPolicy opens ports {ingress_ports}, not only the broker's {set(ports.values())}")
        egress = np["spec"].get("egress") or []
        if not any({"port": 53, "protocol": "UDP"} in rule.get("ports", []) for rule in egress):
            fail(where, "the NetworkPolicy allows no DNS egress")
    for sm in by_kind.get("ServiceMonitor", []):
        matched = [s for s in services.values() if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        if len(matched) != 1 or not all(ep["port"] in {p["name"] for p in matched[0]["spec"]["ports"]}
                                        for ep in sm["spec"]["endpoints"]):
            fail(where, f"the ServiceMonitor must select exactly the admin Service and its port: got {[s['metadata']['name'] for s in matched]}")


def check_custom(where, doc):
    if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
        check_crd(where, doc)
        return True
    return False


ONE_CHAIN = "more than one replica requires a PostgreSQL audit store"
pg_secret = {"auditStoreUrl": {"name": "stint-audit-db", "key": "url"}}
REFUSALS = [
    ("replicaCount 3 on the default SQLite store", {"replicaCount": 3}, ONE_CHAIN),
    ("replicaCount 3 on a sqlite:// config.audit.store",
     {"replicaCount": 3, "config": {"audit": {"store": "sqlite:///var/lib/stint/audit.db"}}}, ONE_CHAIN),
    ("replicaCount 3 on a SQLite emptyDir",
     {"replicaCount": 3, "auditStore": {"sqlite": {"persistence": {"enabled": False}}}}, ONE_CHAIN),
    ("autoscaling to 3 replicas on SQLite", {"autoscaling": {"enabled": True, "maxReplicas": 3}}, ONE_CHAIN),
    ("replicaCount 3 with a store Secret declared sqlite",
     {"replicaCount": 3, "secrets": pg_secret, "auditStore": {"type": "sqlite"}}, ONE_CHAIN),
    ("a store Secret without auditStore.type", {"secrets": pg_secret}, "set auditStore.type"),
    ("auditStore.type postgres without a store", {"auditStore": {"type": "postgres"}}, "no PostgreSQL store is named"),
    ("auditStore.type disagreeing with config.audit.store",
     {"auditStore": {"type": "sqlite"}, "config": {"audit": {"store": "postgres://stint@db:5432/stint"}}}, "make them agree"),
    ("a password in config.audit.store",
     {"config": {"audit": {"store": "postgres://stint:hunter2@db:5432/stint"}}}, "carries a password"),
    ("a SQLite file outside the data volume",
     {"config": {"audit": {"store": "sqlite:///etc/stint/audit.db"}}}, "is not in the data volume"),
    ("config.listen set in values", {"config": {"listen": "0.0.0.0:1"}}, "config.listen is set by the chart"),
    ("config.audit.key_file set in values",
     {"config": {"audit": {"key_file": "/tmp/audit.key"}}}, "config.audit.key_file is set by the chart"),
    ("no audit key Secret", {"secrets": {"auditKey": {"name": ""}}}, "secrets.auditKey.name"),
    ("grants without issuers", {"config": {"grants": {"g": {"kind": "token"}}}}, "config.issuers is empty"),
    ("tls.enabled without a Secret", {"tls": {"enabled": True}}, "tls.enabled needs tls.secretName"),
    ("a misspelt top-level value", {"replicaCont": 3}, "additional properties 'replicaCont' not allowed"),
    ("an unknown stint config key", {"config": {"grantz": {}}}, "grantz"),
    ("an unknown auditStore.type", {"auditStore": {"type": "mysql"}}, "auditStore/type"),
]


def run():
    """Checks the chart; returns (value sets, refusals) checked."""
    cut = ChartUnderTest(CHART, "stint", "stint", check_objects, check_custom)
    with helm.Chart.load(CHART) as chart:
        value_sets = [("default values", {})]
        for path in sorted(glob.glob(f"{CHART}/ci/*.yaml")):
            value_sets.append((os.path.relpath(path, CHART), helm.values_from_yaml(open(path).read())))
        if len(value_sets) < 3:
            fail(CHART, "expected at least two value sets in ci/")
        for label, values in value_sets:
            checked = check_value_set(cut, chart, f"{CHART} {label}", values, [cut.floor, LATEST])
            if checked:
                kinds, crds = checked
                print(f"{CHART} {label}: {', '.join(kinds)} render, lint and validate"
                      + (f"; {', '.join(crds)} checked against the chart's minimal CRD schema and promql-parser" if crds else ""))
        for label, values, expected in REFUSALS:
            expect_refusal(cut, chart, f"{CHART}: {label}", values, expected)
    return len(value_sets), len(REFUSALS)

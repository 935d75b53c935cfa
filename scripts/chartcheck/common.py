"""What every chart check shares: failures, rendering through Helm's own
engine, kubernetes-validate, strict YAML, and the refusal tests.

scripts/check-chart installs the pinned tools and runs run.py; see there.
"""
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import yaml
import helm_python as helm
import kubernetes_validate.utils as kv
from helm_python import _native
from helm_python.chart import _dumps

started = time.monotonic()
failures = []


def fail(where, message):
    failures.append(f"{where}: {message}")
    print(f"FAIL {where}: {message}")


# kubernetes-validate reads the 1.8 MB definitions file again for every
# resource; read each schema file once.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
LATEST = kv.latest_version()

# A built stint binary, when given, also checks every rendered config.
STINT_BIN = os.environ.get("STINT_BIN", "")
if STINT_BIN and not os.access(STINT_BIN, os.X_OK):
    fail("STINT_BIN", f"{STINT_BIN} is not an executable")
    STINT_BIN = ""


def chart_floor(chart_dir):
    """The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), as 1.NN.0."""
    meta = yaml.safe_load(open(f"{chart_dir}/Chart.yaml"))
    return re.search(r"(\d+\.\d+)\.\d+", meta["kubeVersion"]).group(1) + ".0"


LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^(|[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")


class StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; the API server refuses them."""


def _mapping(loader, node, deep=False):
    keys = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is written twice", key_node.start_mark)
        keys.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def group_by_kind(docs):
    kinds = {}
    for doc in docs:
        kinds.setdefault(doc["kind"], []).append(doc)
    return kinds


class ChartUnderTest:
    """A chart, the release it is rendered as, and its own checks."""

    def __init__(self, path, release, namespace, check_objects, check_custom=None):
        self.path = path
        self.release = release
        self.namespace = namespace
        # check_objects(where, values, docs, kube): checks across the objects.
        self.check_objects = check_objects
        # check_custom(where, doc) -> True when it checked a kind that
        # kubernetes-validate has no schema for.
        self.check_custom = check_custom or (lambda where, doc: False)
        self.floor = chart_floor(path)

    def render(self, chart, values, kube):
        # Chart.render of helm-python-sdk 0.2.2 takes no kube_version; the
        # library under it does (.Capabilities.KubeVersion), so pass it there.
        opts = {"name": self.release, "namespace": self.namespace, "is_install": True,
                "kube_version": "v" + kube}
        return json.loads(_native.call_string("helm_render", chart._raw(), _dumps(values), json.dumps(opts)))


def load_manifests(where, manifests, label, namespace):
    """The rendered objects, each checked for duplicates, namespace and labels."""
    out_dir = os.environ.get("CHECK_CHART_OUT")
    docs, seen = [], set()
    for path, text in sorted(manifests.items()):
        if out_dir:
            target = os.path.join(out_dir, label.replace("/", "_"), path)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(text)
        if path.endswith("NOTES.txt"):
            if not text.strip():
                fail(where, "NOTES.txt renders empty")
            continue
        try:
            loaded = [d for d in yaml.load_all(text, Loader=StrictLoader) if d]
        except yaml.YAMLError as e:
            fail(f"{where} {path}", f"not YAML: {e}")
            continue
        for doc in loaded:
            ident = f"{where} {path} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            key = (doc.get("apiVersion", "").split("/")[0], doc.get("kind"), doc.get("metadata", {}).get("name"))
            if key in seen:
                fail(ident, "rendered twice")
            seen.add(key)
            meta = doc.get("metadata", {})
            if meta.get("namespace") != namespace:
                fail(ident, f"metadata.namespace is {meta.get('namespace')!r}, want {namespace!r}")
            for k, v in (meta.get("labels") or {}).items():
                if not LABEL_KEY.match(k) or not isinstance(v, str) or not LABEL_VALUE.match(v):
                    fail(ident, f"label {k}={v!r} is not a valid Kubernetes label")
            docs.append((ident, doc))
    return docs


def validate(ident, doc, kube):
    """kubernetes-validate --strict: unknown fields are errors."""
    try:
        kv.validate(doc, kube, strict=True)
    except kv.ValidationError as e:
        fail(ident, f"kubernetes {kube}: {'.'.join(map(str, e.path))}: {e.message}")
    except kv.SchemaNotFoundError as e:
        fail(ident, e.message)


def check_value_set(cut, chart, label, values, kube_versions):
    """Schema, helm lint --strict, and for each Kubernetes version a render
    validated against that version's schema and checked by the chart's own
    checks. Returns the kinds rendered, or None when it stopped early."""
    try:
        chart.validate_schema(values)
    except helm.HelmError as e:
        fail(label, f"values.schema.json refuses the values: {e}")
        return None
    report = helm.lint(cut.path, values, strict=True, namespace=cut.namespace, kube_version="v" + kube_versions[0])
    for msg in report.get("messages", []):
        if msg["severity"] >= 2:
            fail(label, f"helm lint: {msg['path']}: {msg['error']}")
    for err in report.get("errors", []):
        fail(label, f"helm lint: {err}")
    kinds, custom = set(), set()
    for kube in kube_versions:
        where = f"{label} @{kube}"
        try:
            manifests = cut.render(chart, values, kube)
        except helm.HelmError as e:
            fail(where, f"render failed: {e}")
            return None
        docs = load_manifests(where, manifests, f"{label}@{kube}", cut.namespace)
        for ident, doc in docs:
            kinds.add(doc["kind"])
            if cut.check_custom(ident, doc):
                custom.add(doc["kind"])
            else:
                validate(ident, doc, kube)
        cut.check_objects(where, values, [d for _, d in docs], kube)
    return sorted(kinds), sorted(custom)


def expect_refusal(cut, chart, label, values, expected, kube=None):
    try:
        chart.validate_schema(values)
        cut.render(chart, values, kube or LATEST)
    except helm.HelmError as e:
        message = str(e)
        if expected not in message:
            fail(f"refuse {label}", f"failed, but without {expected!r}: {message}")
        else:
            print(f"refused as expected: {label}")
        return
    fail(f"refuse {label}", f"rendered, but the chart must refuse it with {expected!r}")


def run_stint(args, text, name, env=None):
    """Runs STINT_BIN with `args` and then the path of a file `name` that
    holds `text`; returns the completed process. Only with STINT_BIN."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return subprocess.run([STINT_BIN, *args, path], env=env, capture_output=True, text=True)


def finish(summary):
    elapsed = time.monotonic() - started
    if failures:
        print(f"\n{len(failures)} chart check(s) failed in {elapsed:.1f}s:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        sys.exit(1)
    print(f"{summary} in {elapsed:.1f}s")
    print("chart ok")

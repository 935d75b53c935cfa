"""The values charts/stint-agent must refuse, those it must render although
they look close to a refusal, and MUTATIONS: a good render broken one way
at a time, each of which the checks of agent_pod.py must report (a check
that cannot fail is no check).
"""
import copy

import yaml

from agent_pod import is_agent

# A set the chart renders: each refusal and mutation starts from it.
BASE = {"broker": {"url": "https://stint.example"}, "grants": {"api": {}},
        "app": {"image": {"repository": "registry.example.com/acme/api", "tag": "1.0"}}}


def base(**changes):
    values = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = values
        keys = path.split("__")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return values


AWS = {"awsEndpoint": {"enabled": True, "grant": "app-aws"}, "grants": {"api": {}, "app-aws": {"files": False}}}
REFUSALS = [
    ("the default values (no broker, grants or app)", {}, None, "broker.url is empty"),
    ("no grants", base(grants={}), None, "grants is empty"),
    ("a plain http broker off the pod", base(broker__url="http://stint.example"), None, "must be an https URL"),
    ("a broker URL that is not http(s)", base(broker__url="ftp://stint.example"), None, "must be an https URL"),
    ("a CA from a ConfigMap and a Secret", base(broker__ca={"configMap": "a", "secret": "b"}), None, "not both"),
    ("awsEndpoint without a grant", base(awsEndpoint={"enabled": True}), None, "needs awsEndpoint.grant"),
    ("awsEndpoint.grant not in grants", base(awsEndpoint={"enabled": True, "grant": "aws"}), None, "is not one of grants"),
    ("awsEndpoint.port on the health port", {**base(), **AWS, "awsEndpoint": {**AWS["awsEndpoint"], "port": 9421}},
     None, "must differ"),
    ("a grant that goes nowhere", base(grants={"api": {"files": False}}), None, "goes nowhere"),
    ("a grant named aws-token", base(grants={"aws-token": {}}), None, "cannot be named aws-token"),
    ("a grant name that is a path", base(grants={"../etc": {}}), None, "grants.../etc: a grant's name is"),
    ("renewAt outside (0, 1)", base(grants={"api": {"renewAt": 1.5}}), None, "renewAt"),
    ("a ttl without a unit", base(grants={"api": {"ttl": "15"}}), None, "ttl"),
    ("a token shorter than 600 s", base(token={"audience": "stint", "expirationSeconds": 300}), None,
     "expirationSeconds"),
    ("no app image", base(app={"image": {"repository": ""}}), None, "app.image.repository is empty"),
    ("an app image without tag or digest", base(app__image__tag=""), None, "set app.image.tag or app.image.digest"),
    ("stint as the app's command", base(app__command=["/usr/local/bin/stint", "exec", "--", "./server"]), None,
     "must not run stint"),
    ("stint exec in a shell command", base(app__command=["sh", "-c", "stint exec --grant api -- ./server"]), None,
     "must not run stint"),
    ("the stint image as the app", base(app__image__repository="registry.example.com/platform/stint"), None,
     "is the stint image"),
    ("an app user other than the agent's", base(app__securityContext={"runAsUser": 1000}), None,
     "the app runs as user 1000 but the agent as 65532"),
    ("an app user the chart cannot see", base(podSecurityContext={"runAsUser": None}), None,
     "the app's user would be its image's"),
    ("an app port on the agent's health port", base(app__ports=[{"name": "x", "containerPort": 9421}]), None,
     "which the agent listens on"),
    ("AWS_CONTAINER_CREDENTIALS_FULL_URI in app.env with the endpoint on",
     {**base(), **AWS, "app": {**BASE["app"], "env": [{"name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "x"}]}},
     None, "app.env sets AWS_CONTAINER_CREDENTIALS_FULL_URI"),
    ("static AWS keys in app.env with the endpoint on",
     {**base(), **AWS, "app": {**BASE["app"], "env": [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}]}},
     None, "app.env sets AWS_ACCESS_KEY_ID"),
    ("the state volume mounted into the app", base(app__volumeMounts=[{"name": "stint-state", "mountPath": "/s"}]),
     None, "a volume the chart manages"),
    ("the token volume mounted into the app", base(app__volumeMounts=[{"name": "stint-token", "mountPath": "/t"}]),
     None, "a volume the chart manages"),
    ("state_dir inside the credential volume", base(agent__stateDir="/var/run/stint/state"), None, "overlaps"),
    ("credentials at /tmp", base(credentials={"mountPath": "/tmp", "sizeLimit": "1Mi"}), None, "overlaps"),
    ("nativeSidecar on Kubernetes 1.28", base(agent__nativeSidecar=True), "1.28.0", "needs Kubernetes 1.29"),
    ("a preStop sleep on Kubernetes 1.29", base(agent__preStopSleepSeconds=5), "1.29.0", "needs Kubernetes 1.30"),
    ("a preStop sleep as long as the grace period",
     base(agent__preStopSleepSeconds=30, terminationGracePeriodSeconds=30), None,
     "must be less than terminationGracePeriodSeconds"),
    ("a misspelt value", base(grnats={}), None, "additional properties 'grnats' not allowed"),
    ("a misspelt grant key", base(grants={"api": {"renew_at": 0.5}}), None, "renew_at"),
]
# Values the chart must render although they look close to a refusal.
ACCEPTED = [
    ("a plain http broker on loopback", base(broker__url="http://127.0.0.1:8420")),
    ("a broker path and port", base(broker__url="https://stint.example:8443/broker")),
    ("a credentials path that merely mentions stint in the app's args", base(app__args=["--dir", "/var/run/stint/api"])),
]


def _container(docs, pred):
    spec = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    return next(c for c in (spec.get("initContainers") or []) + spec["containers"] if pred(c))


def _app(docs):
    return _container(docs, lambda c: not is_agent(c))


def _sidecar(docs):
    return _container(docs, lambda c: is_agent(c) and "--once" not in (c.get("args") or []))


def _pod(docs):
    return next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]


def _agent_yaml(docs, change):
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    cfg = yaml.safe_load(cm["data"]["agent.yaml"])
    change(cfg)
    cm["data"]["agent.yaml"] = yaml.safe_dump(cfg)


def _set_env(docs, name, value):
    for e in _app(docs)["env"]:
        if e["name"] == name:
            e["value"] = value


def _token(docs):
    return next(s["serviceAccountToken"] for v in _pod(docs)["volumes"]
                for s in v.get("projected", {}).get("sources", []) if "serviceAccountToken" in s)


# One break at a time of a good render (the aws + files set), and what the
# checks must say about it: a check that cannot fail is no check.
MUTATIONS = [
    ("the app runs stint exec", lambda d: _app(d).update(command=["stint", "exec", "--", "./a"]), "runs stint"),
    ("the app's image is stint", lambda d: _app(d).update(image="registry.example.com/platform/stint:0.1.0"), "runs stint"),
    ("the app mounts the state volume",
     lambda d: _app(d)["volumeMounts"].append({"name": "stint-state", "mountPath": "/s"}), "the agent's own"),
    ("the app mounts the token volume",
     lambda d: _app(d)["volumeMounts"].append({"name": "stint-token", "mountPath": "/t", "readOnly": True}), "the agent's own"),
    ("the app mounts the credentials read-write",
     lambda d: _app(d)["volumeMounts"][0].pop("readOnly"), "read-write"),
    ("the app mounts the credentials elsewhere",
     lambda d: _app(d)["volumeMounts"][0].update(mountPath="/creds"), "the paths in agent.yaml would not hold"),
    ("the sidecar mounts another config",
     lambda d: _sidecar(d)["volumeMounts"][0].update(mountPath="/etc/other"), "mount different volumes"),
    ("the token's audience differs from the values", lambda d: _token(d).update(audience="sts.amazonaws.com"),
     "audience"),
    ("the endpoint URI has another port", lambda d: _set_env(d, "AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://127.0.0.1:9912/creds"),
     "is not aws_endpoint.listen"),
    ("the endpoint URI is not loopback", lambda d: _set_env(d, "AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://10.0.0.1:9911/creds"),
     "not http on loopback"),
    ("the endpoint token file differs", lambda d: _set_env(d, "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "/tmp/t"),
     "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
    ("a grant's files outside the credential volume",
     lambda d: _agent_yaml(d, lambda c: c["grants"]["api"].update(files="/data/api")), "not inside a volume the agent writes"),
    ("state_dir not on the state volume", lambda d: _agent_yaml(d, lambda c: c.update(state_dir="/var/lib/other")),
     "state_dir"),
    ("agent.yaml without state_dir", lambda d: _agent_yaml(d, lambda c: c.pop("state_dir")), "no state_dir"),
    ("agent.yaml with a key config.rs lacks", lambda d: _agent_yaml(d, lambda c: c.update(health="x")),
     "not a key of"),
    ("the readiness probe on another port",
     lambda d: _sidecar(d)["readinessProbe"]["httpGet"].update(port=9999), "readinessProbe"),
    ("the liveness probe on /readyz",
     lambda d: _sidecar(d)["livenessProbe"]["httpGet"].update(path="/readyz"), "livenessProbe"),
    ("the app as another user", lambda d: _app(d).setdefault("securityContext", {}).update(runAsUser=1000), "0600"),
    ("the sidecar's root file system writable",
     lambda d: _sidecar(d)["securityContext"].update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    ("the credential volume on disk",
     lambda d: next(v for v in _pod(d)["volumes"] if v["name"] == "stint-credentials")["emptyDir"].pop("medium"),
     "not an emptyDir in memory"),
    ("PGSERVICEFILE where no grant writes",
     lambda d: _app(d)["env"].append({"name": "PGSERVICEFILE", "value": "/var/run/stint/db/pg_service.conf"}),
     "no grant writes there"),
    ("the API token mounted", lambda d: _pod(d).update(automountServiceAccountToken=True), "automountServiceAccountToken"),
    ("no --once init container", lambda d: _pod(d).update(initContainers=[]), "--once"),
]

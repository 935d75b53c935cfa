"""What an app pod with `stint agent` beside it must be, whether
charts/stint-agent rendered it or someone wrote it by hand
(examples/kubernetes/agent-app.yaml):

  - the app container runs no stint and never mounts the token, the
    agent's state or its config; it mounts the credential volume read-only,
    at the path the agent writes to;
  - the init container (--once) and the sidecar, or the native sidecar,
    mount the same volumes at the same paths and read the same agent.yaml;
  - the projected token has the expected audience (default stint);
  - agent.yaml has only the keys of src/agent/config.rs (and state_dir),
    every grant's files inside the in-memory credential volume, state_dir
    on an in-memory volume of the agent's alone, and the AWS endpoint on
    loopback at the port and token file the app's environment names;
  - the probes hit health_listen, and the agent containers have the
    secure defaults and the app's user (the credential files are 0600).
"""
import os
import re
from urllib.parse import urlsplit

import yaml

from common import StrictLoader, fail, group_by_kind, port_of, selects

CONFIG_RS = "src/agent/config.rs"
STINT_COMMAND = re.compile(r"(^|[\s/])stint\s+(exec|agent|token|credential-process|serve|dev)(\s|$)")


def config_keys():
    """agent.yaml's keys from the Raw* structs of src/agent/config.rs:
    {section: {key: required}}. A field is required unless it has
    #[serde(default)] or is an Option."""
    src = open(CONFIG_RS).read()
    sections = {}
    for section, struct in (("agent", "RawAgent"), ("aws_endpoint", "RawAwsEndpoint"), ("grant", "RawGrant")):
        m = re.search(r"struct %s \{(.*?)\n\}" % struct, src, re.S)
        if m is None:
            fail(CONFIG_RS, f"struct {struct} not found: the agent.yaml keys cannot be checked")
            sections[section] = {}
            continue
        keys, default = {}, False
        for line in m.group(1).splitlines():
            line = line.strip()
            if line.startswith("#[serde(") and "default" in line:
                default = True
            field = re.match(r"(?:pub\s+)?(\w+):\s*(.+?),?$", line)
            if field:
                keys[field.group(1)] = not (default or field.group(2).startswith("Option<"))
                default = False
        sections[section] = keys
    return sections


KEYS = config_keys()


def repository(image):
    """registry:port/path/name:tag@digest -> registry:port/path/name."""
    image = image.split("@")[0]
    slash, colon = image.rfind("/"), image.rfind(":")
    return image[:colon] if colon > slash else image


def runs_stint(container, stint_image=None):
    """Whether a container runs stint: its image, its executable, or a
    stint command in an argument (sh -c "stint exec ..."). A path such as
    /var/run/stint is not."""
    run = list(container.get("command") or []) + list(container.get("args") or [])
    if run and re.search(r"(^|/)stint$", str(run[0])):
        return True
    if any(STINT_COMMAND.search(str(a)) for a in run):
        return True
    image = repository(container.get("image", ""))
    return image.rsplit("/", 1)[-1] == "stint" or image == stint_image


def is_agent(container):
    run = list(container.get("command") or []) + list(container.get("args") or [])
    return runs_stint(container) and "agent" in run


def mounts_of(container):
    return {m["name"]: m for m in container.get("volumeMounts") or []}


def mounts_by_path(container):
    return {m["mountPath"].rstrip("/"): m for m in container.get("volumeMounts") or []}


def inside(path, directory):
    return path.startswith(directory.rstrip("/") + "/")


def memory_volume(volume):
    return (volume or {}).get("emptyDir", {}).get("medium") == "Memory"


class AgentPod:
    """One app's objects, checked step by step; each step reports what is
    broken and says whether the next steps have what they need."""

    def __init__(self, where, docs, report):
        self.where = where
        self.kinds = group_by_kind(docs)
        self.report = lambda message: report(where, message)

    def check(self, audience):
        """Returns agent.yaml's text, or None when there was none to read."""
        if not (self.objects() and self.containers() and self.agents_agree() and self.read_config()):
            return None
        self.config_keys()
        self.token(audience)
        self.credential_volumes()
        for app in self.apps:
            self.app(app)
        self.probes()
        for c in self.agents:
            self.secure(c)
        return self.text

    def objects(self):
        if self.kinds.get("Secret"):
            self.report("a Secret is rendered: credentials come from the broker, the CA from an existing object")
        deployments = self.kinds.get("Deployment", [])
        if len(deployments) != 1:
            self.report(f"expected one Deployment, got {len(deployments)}")
            return False
        deploy = deployments[0]
        pod = deploy["spec"]["template"]
        self.spec = pod["spec"]
        self.pod_sc = self.spec.get("securityContext") or {}
        self.volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        if not selects(deploy["spec"]["selector"].get("matchLabels"), pod["metadata"].get("labels") or {}):
            self.report("the Deployment selector does not match its pod labels")
        if self.spec.get("automountServiceAccountToken") is not False:
            self.report("the pod mounts the Kubernetes API token: set automountServiceAccountToken: false")
        for sa in self.kinds.get("ServiceAccount", []):
            if sa.get("automountServiceAccountToken") is not False:
                self.report(f"ServiceAccount {sa['metadata']['name']} does not set automountServiceAccountToken: false")
        return True

    def containers(self):
        """Which container is what: the app(s), the --once init container
        and the sidecar, or the native sidecar."""
        inits, regular = self.spec.get("initContainers") or [], self.spec.get("containers") or []
        for c in inits + regular:
            for name in mounts_of(c):
                if name not in self.volumes:
                    self.report(f"{c['name']} mounts undefined volume {name}")
        native = [c for c in inits if is_agent(c) and c.get("restartPolicy") == "Always"]
        once = [c for c in inits if is_agent(c) and "--once" in (c.get("args") or []) and c not in native]
        sidecars = [c for c in regular if is_agent(c)]
        self.apps = [c for c in regular if not is_agent(c)]
        self.native = bool(native)
        if not self.apps:
            self.report("no app container: every container runs stint agent")
            return False
        if native:
            if len(native) != 1 or once or sidecars:
                self.report("a native sidecar needs no --once init container and no other agent: "
                            f"native {len(native)}, --once {len(once)}, sidecars {len(sidecars)}")
            if "--once" in (native[0].get("args") or []):
                self.report("the native sidecar runs --once: it would exit, and nothing renews")
            self.renewing, self.agents = native[0], native[:1]
        else:
            if len(once) != 1 or len(sidecars) != 1:
                self.report("expected one init container with `stint agent --once` and one sidecar `stint agent`, "
                            f"got {len(once)} and {len(sidecars)}")
                return False
            if "--once" in (sidecars[0].get("args") or []):
                self.report("the sidecar runs --once: nothing renews")
            self.renewing, self.agents = sidecars[0], [once[0], sidecars[0]]
        stint_image = repository(self.renewing["image"])
        for app in self.apps:
            if runs_stint(app, stint_image):
                self.report(f"the app container {app['name']} runs stint (image {app.get('image')}, "
                            f"command {app.get('command')}, args {app.get('args')}): the agent beside it does")
        self.agent_mounts = mounts_by_path(self.renewing)
        return True

    def agents_agree(self):
        """The same volumes at the same paths, one image, one agent.yaml."""
        layout = [sorted((m["name"], m["mountPath"], bool(m.get("readOnly"))) for m in c.get("volumeMounts") or [])
                  for c in self.agents]
        if any(one != layout[0] for one in layout):
            self.report(f"the agent containers mount different volumes: {[c['name'] for c in self.agents]}: {layout}")
        if any(c["image"] != self.renewing["image"] for c in self.agents):
            self.report("the agent containers run different images")
        configs = set()
        for c in self.agents:
            args = c.get("args") or []
            if "--config" not in args or args.index("--config") + 1 >= len(args):
                self.report(f"{c['name']} has no --config FILE")
                return False
            configs.add(args[args.index("--config") + 1])
        if len(configs) != 1:
            self.report(f"the agent containers read different configs: {sorted(configs)}")
        self.config_path = configs.pop()
        return True

    def mount_holding(self, path):
        return next((m for p, m in self.agent_mounts.items() if inside(path, p)), None)

    def read_config(self):
        """agent.yaml from the ConfigMap behind --config's volume."""
        mount = self.mount_holding(self.config_path)
        if mount is None:
            self.report(f"--config {self.config_path} is on no volume of the agent")
            return False
        if not mount.get("readOnly"):
            self.report("the agent's config volume is not mounted read-only")
        self.config_mount = mount
        volume = self.volumes.get(mount["name"], {})
        item = os.path.relpath(self.config_path, mount["mountPath"])
        sources = [volume["configMap"]] if "configMap" in volume else [
            s["configMap"] for s in volume.get("projected", {}).get("sources", []) if "configMap" in s]
        name = next((s["name"] for s in sources if any(i["path"] == item for i in s.get("items") or [])
                     or (not s.get("items") and item == "agent.yaml")), None)
        cm = next((c for c in self.kinds.get("ConfigMap", []) if c["metadata"]["name"] == name), None)
        if cm is None or "agent.yaml" not in cm.get("data", {}):
            self.report(f"the config volume's ConfigMap {name!r} with agent.yaml is not among the objects")
            return False
        self.text = cm["data"]["agent.yaml"]
        try:
            self.cfg = yaml.load(self.text, Loader=StrictLoader)
        except yaml.YAMLError as e:
            self.report(f"agent.yaml is not YAML: {e}")
            return False
        self.grants = self.cfg.get("grants") or {}
        self.aws = self.cfg.get("aws_endpoint")
        return True

    def config_keys(self):
        """agent.yaml's keys are those of src/agent/config.rs."""
        def keys(section, obj, at):
            known = KEYS[section]
            if not isinstance(obj, dict):
                self.report(f"agent.yaml {at or '.'} is not a mapping")
                return
            for k in obj:
                if k not in known:
                    self.report(f"agent.yaml {at}{k}: not a key of {CONFIG_RS} ({sorted(known)})")
            for k, required in known.items():
                # state_dir is optional to the agent, but the hand-over
                # from the init container to the sidecar needs it.
                if (required or (section == "agent" and k == "state_dir")) and k not in obj:
                    self.report(f"agent.yaml has no {at}{k}")
        keys("agent", self.cfg, "")
        if self.aws is not None:
            keys("aws_endpoint", self.aws, "aws_endpoint.")
            if not re.match(r"^(127\.\d+\.\d+\.\d+|\[::1\]):\d+$", str(self.aws.get("listen"))):
                self.report(f"aws_endpoint.listen {self.aws.get('listen')} is not on loopback")
            if self.aws.get("grant") not in self.grants:
                self.report(f"aws_endpoint.grant {self.aws.get('grant')} is not one of grants")
        if not self.grants:
            self.report("agent.yaml has no grants")
        for name, grant in self.grants.items():
            keys("grant", grant or {}, f"grants.{name}.")
        if self.cfg.get("ca_file") and not inside(self.cfg["ca_file"], self.config_mount["mountPath"]):
            self.report(f"ca_file {self.cfg['ca_file']} is not in the agent's config volume")

    def token(self, audience):
        """token_file is a projected token for `audience`, in the agents only."""
        token_file = self.cfg.get("token_file", "")
        mount = self.mount_holding(token_file)
        self.token_mount = mount
        volume = self.volumes.get((mount or {}).get("name"), {})
        source = next((s["serviceAccountToken"] for s in volume.get("projected", {}).get("sources", [])
                       if "serviceAccountToken" in s), None)
        if source is None:
            self.report(f"token_file {token_file} is not on a projected serviceAccountToken volume of the agent")
            return
        if source.get("audience") != audience:
            self.report(f"the projected token's audience is {source.get('audience')!r}, the values say {audience!r}")
        if os.path.join(mount["mountPath"], source.get("path", "")) != token_file:
            self.report(f"token_file {token_file} is not the projected token's path")
        if source.get("expirationSeconds", 3600) < 600:
            self.report("the projected token's expirationSeconds is below 600, which Kubernetes refuses")

    def credential_volumes(self):
        """Every grant's files and the AWS token in one in-memory volume the
        agent writes; state_dir on another, of the agent's alone."""
        names = set()
        for name, grant in self.grants.items():
            files = (grant or {}).get("files")
            if files is None:
                continue
            mount = self.mount_holding(files)
            if not os.path.isabs(files) or mount is None or mount.get("readOnly"):
                self.report(f"grants.{name}.files {files} is not inside a volume the agent writes")
                continue
            names.add(mount["name"])
        if self.aws:
            token_file = self.aws.get("authorization_token_file", "")
            mount = self.mount_holding(token_file)
            if mount is None or mount.get("readOnly"):
                self.report(f"aws_endpoint.authorization_token_file {token_file} is not in a volume the agent writes")
            else:
                names.add(mount["name"])
        if len(names) > 1:
            self.report(f"the credentials are spread over volumes {sorted(names)}")
        self.cred = next(iter(sorted(names)), None)
        if self.cred:
            if not memory_volume(self.volumes.get(self.cred)):
                self.report(f"the credential volume {self.cred} is not an emptyDir in memory")
            self.cred_path = mounts_of(self.renewing)[self.cred]["mountPath"].rstrip("/")
        state_dir = str(self.cfg.get("state_dir", ""))
        self.state = self.agent_mounts.get(state_dir.rstrip("/"))
        if self.state is None or self.state.get("readOnly"):
            self.report(f"state_dir {state_dir!r} is not a writable volume mounted at that path in the agent")
        elif self.state["name"] == self.cred:
            self.report("state_dir is on the credential volume, which the app mounts")
        elif not memory_volume(self.volumes.get(self.state["name"])):
            self.report(f"the state volume {self.state['name']} is not an emptyDir in memory")

    def app(self, app):
        """What the app mounts, its user, and the environment pointing at the agent."""
        name = app["name"]
        mounts = mounts_of(app)
        private = {self.config_mount["name"], (self.token_mount or {}).get("name"), (self.state or {}).get("name")}
        for volume in sorted((private - {None}) & set(mounts)):
            self.report(f"the app container {name} mounts {volume}, the agent's own (config, token or state)")
        if self.cred:
            m = mounts.get(self.cred)
            if m is None:
                self.report(f"the app container {name} does not mount the credential volume {self.cred}")
            elif m.get("readOnly") is not True:
                self.report(f"the app container {name} mounts the credential volume {self.cred} read-write")
            elif m["mountPath"].rstrip("/") != self.cred_path:
                self.report(f"the app sees the credentials at {m['mountPath']}, the agent writes them at "
                            f"{self.cred_path}: the paths in agent.yaml would not hold in the app")
        user = (app.get("securityContext") or {}).get("runAsUser", self.pod_sc.get("runAsUser"))
        agent_user = (self.renewing.get("securityContext") or {}).get("runAsUser", self.pod_sc.get("runAsUser"))
        if user != agent_user:
            self.report(f"the app container {name} runs as {user}, the agent as {agent_user}: the credential files are 0600")
        env = {e["name"]: e.get("value") for e in app.get("env") or []}
        self.aws_env(name, env)
        # A path in the credential volume the app is told about is one the agent writes.
        written = [g["files"].rstrip("/") for g in self.grants.values() if (g or {}).get("files")]
        for var, value in env.items():
            if self.cred and isinstance(value, str) and inside(value, self.cred_path) \
                    and not any(value.rstrip("/") == w or inside(value, w) for w in written) \
                    and value != (self.aws or {}).get("authorization_token_file"):
                self.report(f"the app's {var}={value} is in the credential volume, but no grant writes there")
        ports = {p["containerPort"] for p in app.get("ports") or []}
        taken = {port_of(str(self.cfg.get("health_listen", ":0")))} | ({port_of(self.aws["listen"])} if self.aws else set())
        if ports & taken:
            self.report(f"the app container {name} declares ports {sorted(ports & taken)}, which the agent listens on")

    def aws_env(self, name, env):
        """AWS_CONTAINER_CREDENTIALS_FULL_URI is loopback at aws_endpoint.listen's
        port, and the token file is aws_endpoint's."""
        uri = env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        if self.aws and uri is None:
            self.report(f"aws_endpoint is on, but the app container {name} has no AWS_CONTAINER_CREDENTIALS_FULL_URI")
        if uri is None:
            return
        if not self.aws:
            self.report(f"AWS_CONTAINER_CREDENTIALS_FULL_URI={uri} but agent.yaml has no aws_endpoint")
            return
        parsed = urlsplit(uri)
        if parsed.scheme != "http" or parsed.hostname not in ("127.0.0.1", "::1", "localhost"):
            self.report(f"AWS_CONTAINER_CREDENTIALS_FULL_URI={uri} is not http on loopback")
        elif parsed.port != port_of(self.aws["listen"]):
            self.report(f"AWS_CONTAINER_CREDENTIALS_FULL_URI port {parsed.port} is not aws_endpoint.listen {self.aws['listen']}")
        token_file = env.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        if token_file != self.aws.get("authorization_token_file"):
            self.report(f"AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={token_file!r} is not "
                        f"aws_endpoint.authorization_token_file {self.aws.get('authorization_token_file')!r}")

    def probes(self):
        """Readiness /readyz, liveness /healthz (and startup /readyz for a
        native sidecar) on health_listen, which the kubelet can reach."""
        listen = str(self.cfg.get("health_listen", ":0"))
        if listen.startswith(("127.", "[::1]", "localhost")):
            self.report(f"health_listen {listen} is on loopback: the kubelet's probes cannot reach it")
        ports = {p.get("name"): p["containerPort"] for p in self.renewing.get("ports") or []}
        want = [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]
        if self.native:
            want.append(("startupProbe", "/readyz"))
        for probe, path in want:
            get = (self.renewing.get(probe) or {}).get("httpGet", {})
            port = get.get("port")
            if get.get("path") != path or ports.get(port, port) != port_of(listen):
                self.report(f"the agent's {probe} is not GET {path} on health_listen {listen}: {get}")

    def secure(self, c):
        """The agent containers' secure defaults."""
        sc = c.get("securityContext") or {}
        for key, want in (("runAsNonRoot", True), ("runAsUser", 65532)):
            if sc.get(key, self.pod_sc.get(key)) != want:
                self.report(f"{c['name']}: {key} is {sc.get(key, self.pod_sc.get(key))!r}, want {want!r}")
        for key, want in (("readOnlyRootFilesystem", True), ("allowPrivilegeEscalation", False)):
            if sc.get(key) != want:
                self.report(f"{c['name']}: securityContext.{key} is {sc.get(key)!r}, want {want!r}")
        if "ALL" not in (sc.get("capabilities") or {}).get("drop", []):
            self.report(f"{c['name']}: capabilities do not drop ALL")
        if (sc.get("seccompProfile") or self.pod_sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            self.report(f"{c['name']}: seccompProfile is not RuntimeDefault")
        res = c.get("resources") or {}
        if not res.get("requests") or not res.get("limits"):
            self.report(f"{c['name']}: no resource requests and limits")
        if "/tmp" not in mounts_by_path(c):
            self.report(f"{c['name']}: no volume at /tmp (the root file system is read-only)")


def check_agent_pod(where, docs, audience, report):
    """Reports every broken promise through report(where, message); returns
    agent.yaml's text, or None when there was none to read."""
    return AgentPod(where, docs, report).check(audience)

"""How each pinned component is built: Go packages, flags, and the images made from the binaries.

Data only; ``build.py`` runs it. A recipe's repr is part of its cache key, so changing a flag here
rebuilds exactly that component.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from metalseed.mirror.oci import ImageConfig


@dataclass(frozen=True)
class GoBuild:
    """One ``go build`` of one or more main packages with the same flags."""

    packages: tuple[str, ...]
    rename: tuple[tuple[str, str], ...] = ()  # go's output name -> our binary name
    xflags: tuple[tuple[str, str], ...] = ()  # -X symbol=value
    cgo: bool = False
    tags: tuple[str, ...] = ()
    static_cgo: bool = False  # link a cgo binary statically (runc with libseccomp)


@dataclass(frozen=True)
class GoTestBuild(GoBuild):
    """``go test -c`` of one package: its tests as one binary, ``<package>.test``.

    A subclass rather than a flag on GoBuild: a new field would change every recipe's repr, which
    is part of every component's cache key, and rebuild the whole mirror."""


@dataclass(frozen=True)
class ImageRecipe:
    """An image made of mirror binaries (``bin:<name>``), host files (``host:<path>``) and links."""

    name: str  # artifact name
    reference_index: int  # which of the pin's images
    files: tuple[tuple[str, str, int], ...]  # (dest, source, mode)
    links: tuple[tuple[str, str], ...] = ()  # (dest, target)
    busybox: bool = False  # Debian's static busybox with its applet links, in a layer of its own
    host_libs: tuple[str, ...] = ()  # host binaries (dest paths) whose shared libraries are added
    caps: tuple[tuple[str, int], ...] = ()  # (dest, capability number) as file capabilities
    config: ImageConfig = field(default_factory=ImageConfig)
    shared_first_layer: bool = False  # the first file alone in its own layer (shared across images)


@dataclass(frozen=True)
class Recipe:
    component: str  # the pin's name
    gomod: str | None = None  # directory under mirror/go
    builds: tuple[GoBuild, ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # bin/<link> -> <target> (multi-call names)
    pause_c: bool = False  # compile upstream's build/pause/linux/pause.c with gcc
    images: tuple[ImageRecipe, ...] = ()


@dataclass(frozen=True)
class OpenAPIRecipe(Recipe):
    """The OpenAPI v3 schemas of the pin's k8s.io/kubernetes module, bundled into one data file.

    A subclass (not a Recipe field) so that every other recipe's repr, part of its cache key,
    stays as it was."""

    spec_dir: str = "api/openapi-spec/v3"


@dataclass(frozen=True)
class CRDRecipe(Recipe):
    """CRD schemas of the pin's module (``crd_dir``'s ``files``, each with its sha256), bundled
    into one data file (:mod:`metalseed.kube.crd`). A subclass for the same reason as
    OpenAPIRecipe."""

    crd_dir: str = ""
    files: tuple[tuple[str, str], ...] = ()  # (file name, sha256 hex)


@dataclass(frozen=True)
class TreeRecipe(Recipe):
    """Beside the binaries, one directory of the pin's module (``tree_dir``) packed into
    ``bin/<tree_name>``, a reproducible tar (sorted, owner root, mtime 0) that hosts install like
    a binary. A subclass for the same reason as OpenAPIRecipe."""

    tree_dir: str = ""
    tree_name: str = ""


CNI = "github.com/containernetworking/plugins/plugins"
CNI_VERSION = "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion"
CONTAINERD = "github.com/containerd/containerd/v2"
K8S_VERSION_PKGS = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
KUBE_NAMES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
# The previous release's multi-call binary beside ``kube`` in the mirror's bin/ (hosts name it kube).
PREVIOUS_KUBE = "kube-previous"
CA_BUNDLE = "host:/etc/ssl/certs/ca-certificates.crt"
NET_BIND_SERVICE = 10
# Replaced at build time by the release time the module proxy records: a build date that is both
# meaningful and the same on every rebuild.
MODULE_TIME = "{module_time}"


def kube_xflags(version: str, build_date: str) -> tuple[tuple[str, str], ...]:
    major, minor = version.removeprefix("v").split(".")[:2]
    values = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": "",  # the module proxy does not say which commit a tag is
        "gitTreeState": "archive",  # what upstream's hack/lib/version.sh says for a source archive
        "buildDate": build_date,
    }
    return tuple((f"{pkg}.{k}", v) for pkg in K8S_VERSION_PKGS for k, v in values.items())


def _kube_image(component: str, index: int) -> ImageRecipe:
    # The multi-call binary is the first, shared layer: three control-plane images cost one copy.
    return ImageRecipe(
        name=f"{component}-image",
        reference_index=index,
        files=(("/usr/local/bin/kube", "bin:kube", 0o755),),
        links=((f"/usr/local/bin/{component}", "kube"),),
        shared_first_layer=True,
        config=ImageConfig(entrypoint=(f"/usr/local/bin/{component}",)),
    )


TRAEFIK_ENTRYPOINT = b"""#!/bin/sh
# As the official traefik image does: flags alone mean "traefik <flags>".
set -e
if [ "${1#-}" != "$1" ]; then
  set -- traefik "$@"
fi
exec "$@"
"""

# The e2e nginx images are stock nginx serving /usr/share/nginx/html on port 80; this is Debian's
# nginx doing the same, its temporary files under /tmp (the image has no /var/lib/nginx).
E2E_NGINX_CONF = b"""user nobody nogroup;
worker_processes 1;
pid /tmp/nginx.pid;
events {}
http {
  access_log /dev/stdout;
  client_body_temp_path /tmp/nginx-body;
  proxy_temp_path /tmp/nginx-proxy;
  fastcgi_temp_path /tmp/nginx-fastcgi;
  uwsgi_temp_path /tmp/nginx-uwsgi;
  scgi_temp_path /tmp/nginx-scgi;
  server {
    listen 80;
    root /usr/share/nginx/html;
    index index.html;
  }
}
"""
E2E_INDEX = (
    b"<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n"
    b"<body><h1>Welcome to nginx!</h1></body></html>\n"
)
E2E_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
E2E_GROUP = b"root:x:0:\nnogroup:x:65534:\n"
# getent hosts (the DNS specs' /etc/hosts check) reads the files first, as Debian's default does.
E2E_NSSWITCH = b"hosts: files dns\n"

TEXTS = {
    "traefik-entrypoint": TRAEFIK_ENTRYPOINT,
    "e2e-nginx-conf": E2E_NGINX_CONF,
    "e2e-index": E2E_INDEX,
    "e2e-passwd": E2E_PASSWD,
    "e2e-group": E2E_GROUP,
    "e2e-nsswitch": E2E_NSSWITCH,
}


# What upstream's agnhost image adds to alpine and the e2e specs run in it: dig (DNS specs), curl
# (the networking specs' /dial checks), OpenBSD's nc ("nc -v -t -w 2", which busybox's nc refuses)
# and bash; Debian's, with their libraries. bash is /bin/sh: Debian's static busybox sh runs its own
# applets before anything on PATH (seen: its nc, not /usr/bin/nc), where alpine's sh does not.
AGNHOST_TOOLS = ("/usr/bin/dig", "/usr/bin/curl", "/usr/bin/nc.openbsd", "/bin/bash")


def _agnhost_image(name: str, index: int) -> ImageRecipe:
    return ImageRecipe(
        name=name,
        reference_index=index,
        files=(
            ("/agnhost", "bin:agnhost", 0o755),
            ("/usr/bin/dig", "host:/usr/bin/dig", 0o755),
            ("/usr/bin/curl", "host:/usr/bin/curl", 0o755),
            ("/usr/bin/nc", "host:/usr/bin/nc.openbsd", 0o755),
            ("/bin/bash", "host:/bin/bash", 0o755),
        ),
        links=(("/bin/sh", "bash"),),
        busybox=True,  # several subcommands (and e2e pods) run shell commands
        host_libs=AGNHOST_TOOLS,
        config=ImageConfig(entrypoint=("/agnhost",), cmd=("pause",)),
    )


def _e2e_nginx_image(name: str, index: int) -> ImageRecipe:
    return ImageRecipe(
        name=name,
        reference_index=index,
        files=(
            ("/usr/sbin/nginx", "host:/usr/sbin/nginx", 0o755),
            ("/etc/nginx/nginx.conf", "text:e2e-nginx-conf", 0o644),
            ("/usr/share/nginx/html/index.html", "text:e2e-index", 0o644),
            ("/etc/passwd", "text:e2e-passwd", 0o644),
            ("/etc/group", "text:e2e-group", 0o644),
        ),
        busybox=True,
        host_libs=("/usr/sbin/nginx",),
        config=ImageConfig(cmd=("nginx", "-g", "daemon off;"), exposed_ports=("80/tcp",)),
    )


def recipes(versions: dict[str, str]) -> list[Recipe]:
    """Every component, in build order (what the lab needs to run containers first)."""
    v = versions
    return [
        Recipe(
            "containerd",
            gomod="containerd",
            builds=(
                GoBuild(
                    packages=tuple(
                        f"{CONTAINERD}/cmd/{c}" for c in ("containerd", "containerd-shim-runc-v2", "ctr")
                    ),
                    xflags=(
                        (f"{CONTAINERD}/version.Version", v["containerd"]),
                        (f"{CONTAINERD}/version.Package", CONTAINERD),
                    ),
                ),
            ),
        ),
        Recipe(
            "runc",
            gomod="runc",
            builds=(
                GoBuild(
                    packages=("github.com/opencontainers/runc",),
                    cgo=True,
                    tags=("seccomp", "netgo", "osusergo"),
                    static_cgo=True,
                ),
            ),
        ),
        Recipe(
            "cni-plugins",
            gomod="cni-plugins",
            builds=(
                GoBuild(
                    packages=tuple(
                        f"{CNI}/{p}"
                        for p in (
                            "main/bridge",
                            "main/loopback",
                            "ipam/host-local",
                            "meta/portmap",
                            "meta/bandwidth",
                            "meta/firewall",
                        )
                    ),
                    xflags=((CNI_VERSION, v["cni-plugins"]),),
                ),
            ),
        ),
        Recipe(
            "crictl",
            gomod="crictl",
            builds=(
                GoBuild(
                    packages=("sigs.k8s.io/cri-tools/cmd/crictl",),
                    xflags=(("sigs.k8s.io/cri-tools/pkg/version.Version", v["crictl"]),),
                ),
            ),
        ),
        Recipe(
            "pause",
            pause_c=True,
            images=(
                ImageRecipe(
                    name="pause-image",
                    reference_index=0,
                    files=(("/pause", "bin:pause", 0o755),),
                    config=ImageConfig(entrypoint=("/pause",), user="65535:65535", env=()),
                ),
            ),
        ),
        Recipe(
            "etcd",
            gomod="etcd",
            builds=(GoBuild(packages=(".",), rename=(("etcd", "etcd"),)),),
            # etcdutl: snapshot status and restore left etcdctl in 3.6.
            links=(("etcdctl", "etcd"), ("etcdutl", "etcd")),
            images=(
                ImageRecipe(
                    name="etcd-image",
                    reference_index=0,
                    files=(("/usr/local/bin/etcd", "bin:etcd", 0o755),),
                    links=(("/usr/local/bin/etcdctl", "etcd"), ("/usr/local/bin/etcdutl", "etcd")),
                    config=ImageConfig(cmd=("/usr/local/bin/etcd",)),
                ),
            ),
        ),
        Recipe(
            "kubernetes",
            gomod="kubernetes",
            builds=(
                GoBuild(
                    packages=(".",),
                    rename=(("kubernetes", "kube"),),
                    xflags=kube_xflags(v["kubernetes"], MODULE_TIME),
                ),
            ),
            links=tuple((n, "kube") for n in KUBE_NAMES),
            images=(
                _kube_image("kube-apiserver", 0),
                _kube_image("kube-controller-manager", 1),
                _kube_image("kube-scheduler", 2),
            ),
        ),
        OpenAPIRecipe("kubernetes-openapi"),
        # Cilium's CRDs: the policies' schemas, for offline validation of the tenants' Cilium
        # policies, and every CRD the agent waits for (pkg/k8s/synced/crd.go with metalseed's
        # agent flags), applied to a cluster that runs it (no operator registers them here).
        CRDRecipe(
            "cilium-crds",
            crd_dir="pkg/k8s/apis/cilium.io/client/crds",
            files=(
                ("v2/ciliumnetworkpolicies.yaml",
                 "62c6de8f358da125b94468d39187edb1cea157d79503fdc50ccec8a6aaa79a76"),
                ("v2/ciliumclusterwidenetworkpolicies.yaml",
                 "ae65e44fdee9da399cb7257a8464f197bea5270fdc213f6343700309c39abad6"),
                ("v2/ciliumidentities.yaml",
                 "6584bb0e5bd3cb41d6f1e1ff80b866407d21a44cba00d35b1c39abab0a2d0d57"),
                ("v2/ciliumendpoints.yaml",
                 "fecfbb3886d3683e93b6adce98553db7c6f52cbc4442de253db488df0ad44a7e"),
                ("v2/ciliumnodes.yaml",
                 "cc3e57ace385353b237b04f466fb99fd9c75c96682044063daae3e0150d2247f"),
                ("v2/ciliumcidrgroups.yaml",
                 "8060269a3ef63271578a090bbe5be135d0dad2932f7ccc7204b37820c990e535"),
                ("v2/ciliumloadbalancerippools.yaml",
                 "31dd3d26d987e46bc04d66ec2f9bdcf2aa2b13b7b368e515ca324961b55d65b1"),
                ("v2alpha1/ciliumpodippools.yaml",
                 "34dd4b4a6a6f588b1936e1b01acb72fb9cb2c9cf7c3fefead7b5b253a356a9e8"),
                ("v2alpha1/ciliuml2announcementpolicies.yaml",
                 "5a5ada1455e5169d1f95d4814302677ebff4bf477b5298483e9b827a70feee7a"),
            ),
        ),
        Recipe(
            "flannel",
            gomod="flannel",
            builds=(
                GoBuild(
                    packages=("github.com/flannel-io/flannel",),
                    rename=(("flannel", "flanneld"),),
                    # The udp backend is cgo (upstream builds flanneld with CGO_ENABLED=1, static).
                    cgo=True,
                    static_cgo=True,
                    tags=("netgo", "osusergo"),
                    xflags=(("github.com/flannel-io/flannel/pkg/version.Version", v["flannel"]),),
                ),
            ),
            images=(
                ImageRecipe(
                    name="flannel-image",
                    reference_index=0,
                    # flanneld runs iptables (go-iptables execs it): Debian's, with its libraries.
                    files=(
                        ("/opt/bin/flanneld", "bin:flanneld", 0o755),
                        ("/usr/sbin/xtables-nft-multi", "host:/usr/sbin/xtables-nft-multi", 0o755),
                    ),
                    links=tuple(
                        (f"/usr/sbin/{n}", "xtables-nft-multi")
                        for n in (
                            "iptables",
                            "iptables-save",
                            "iptables-restore",
                            "ip6tables",
                            "ip6tables-save",
                            "ip6tables-restore",
                        )
                    ),
                    busybox=True,
                    host_libs=("/usr/sbin/xtables-nft-multi", "xtables-plugins"),
                    config=ImageConfig(entrypoint=("/opt/bin/flanneld",)),
                ),
            ),
        ),
        Recipe(
            "flannel-cni-plugin",
            gomod="flannel-cni-plugin",
            builds=(
                GoBuild(
                    packages=(f"{CNI}/meta/flannel",),
                    xflags=((CNI_VERSION, v["flannel-cni-plugin"]),),
                ),
            ),
            images=(
                ImageRecipe(
                    name="flannel-cni-plugin-image",
                    reference_index=0,
                    files=(("/flannel", "bin:flannel", 0o755),),
                    busybox=True,  # its init container runs "cp -f /flannel /opt/cni/bin/flannel"
                    config=ImageConfig(cmd=("/bin/sh",)),  # upstream's, inherited from its alpine base
                ),
            ),
        ),
        Recipe(
            "coredns",
            gomod="coredns",
            # mirror/go/coredns/main.go: upstream's coremain with the plugins a cluster uses.
            builds=(GoBuild(packages=(".",), rename=(("coredns", "coredns"),)),),
            images=(
                ImageRecipe(
                    name="coredns-image",
                    reference_index=0,
                    files=(
                        ("/coredns", "bin:coredns", 0o755),
                        ("/etc/ssl/certs/ca-certificates.crt", CA_BUNDLE, 0o644),
                    ),
                    # Upstream runs as nonroot and setcap's the binary so it may bind port 53.
                    caps=(("/coredns", NET_BIND_SERVICE),),
                    config=ImageConfig(
                        entrypoint=("/coredns",), user="65532:65532", exposed_ports=("53/tcp", "53/udp")
                    ),
                ),
            ),
        ),
        Recipe(
            "agnhost",
            gomod="kubernetes",
            builds=(
                GoBuild(
                    packages=("k8s.io/kubernetes/test/images/agnhost",),
                    # upstream's image build sets it from test/images/agnhost/VERSION
                    xflags=(("main.Version", v["agnhost"]),),
                ),
            ),
            images=(
                _agnhost_image("agnhost-image", 0),
            ),
        ),
        Recipe(
            "traefik",
            gomod="traefik",
            builds=(
                GoBuild(
                    packages=("github.com/traefik/traefik/v3/cmd/traefik",),
                    xflags=(
                        ("github.com/traefik/traefik/v3/pkg/version.Version", v["traefik"]),
                        ("github.com/traefik/traefik/v3/pkg/version.BuildDate", MODULE_TIME),
                    ),
                ),
            ),
            images=(
                ImageRecipe(
                    name="traefik-image",
                    reference_index=0,
                    files=(
                        ("/usr/local/bin/traefik", "bin:traefik", 0o755),
                        ("/entrypoint.sh", "text:traefik-entrypoint", 0o755),
                        ("/etc/ssl/certs/ca-certificates.crt", CA_BUNDLE, 0o644),
                    ),
                    busybox=True,
                    config=ImageConfig(
                        entrypoint=("/entrypoint.sh",), cmd=("traefik",), exposed_ports=("80/tcp",)
                    ),
                ),
            ),
        ),
        # The alternative policy engine of seeds (network_policy = "kube-router"): its firewall
        # alone (iptables + ipset, both built into this kernel); kube-network-policies needs
        # nftables' queue statement, which this kernel lacks (see README).
        Recipe(
            "kube-router",
            gomod="kube-router",
            builds=(
                GoBuild(
                    packages=("github.com/cloudnativelabs/kube-router/v2/cmd/kube-router",),
                    xflags=(
                        ("github.com/cloudnativelabs/kube-router/v2/pkg/version.Version",
                         v["kube-router"]),
                        ("github.com/cloudnativelabs/kube-router/v2/pkg/version.BuildDate",
                         MODULE_TIME),
                    ),
                ),
            ),
            images=(
                ImageRecipe(
                    name="kube-router-image",
                    reference_index=0,
                    # It execs iptables-save/-restore and ipset: Debian's, with their libraries.
                    files=(
                        ("/usr/local/bin/kube-router", "bin:kube-router", 0o755),
                        ("/usr/sbin/xtables-nft-multi", "host:/usr/sbin/xtables-nft-multi", 0o755),
                        ("/usr/sbin/ipset", "host:/usr/sbin/ipset", 0o755),
                    ),
                    links=tuple(
                        (f"/usr/sbin/{n}", "xtables-nft-multi")
                        for n in ("iptables", "iptables-save", "iptables-restore", "ip6tables",
                                  "ip6tables-save", "ip6tables-restore")
                    ),
                    busybox=True,
                    host_libs=("/usr/sbin/xtables-nft-multi", "/usr/sbin/ipset", "xtables-plugins"),
                    config=ImageConfig(entrypoint=("/usr/local/bin/kube-router",)),
                ),
            ),
        ),
        # The agent compiles its datapath on each node at run time: the sources travel beside it.
        TreeRecipe(
            "cilium",
            gomod="cilium",
            builds=(
                GoBuild(
                    packages=("github.com/cilium/cilium/daemon",
                              "github.com/cilium/cilium/plugins/cilium-cni"),
                    rename=(("daemon", "cilium-agent"),),
                    # Upstream's is "<version> <commit> <date>"; ldflags here carry no spaces.
                    xflags=(("github.com/cilium/cilium/pkg/version.ciliumVersion",
                             v["cilium"].removeprefix("v")),),
                ),
            ),
            tree_dir="bpf",
            tree_name="cilium-bpf.tar",
        ),
        Recipe(
            "e2e",
            gomod="e2e",
            builds=(
                GoTestBuild(packages=(".",), xflags=kube_xflags(v["e2e"], MODULE_TIME)),
                # ginkgo -p runs e2e.test in parallel processes: the CLI of the same ginkgo.
                GoBuild(packages=("github.com/onsi/ginkgo/v2/ginkgo",)),
            ),
            images=(
                # What upstream's busybox image is (a busybox with its applets, CMD sh), from Debian's
                # busybox-static: the e2e specs run shell commands in it, not a particular version.
                ImageRecipe(
                    name="e2e-busybox-image",
                    reference_index=0,
                    files=(),
                    busybox=True,
                    config=ImageConfig(cmd=("sh",)),
                ),
            ),
        ),
        Recipe(
            "e2e-images",
            images=(
                # e2e's previous agnhost (rolling updates go from it to the current one): the same
                # agnhost build under the older tag; no module the proxy serves has agnhost 2.55.
                _agnhost_image("e2e-agnhost-prev-image", 0),
                # The DNS specs' "jessie" querier: dig and glibc's getent (Debian's, the image's
                # own base is Debian 12 too) beside busybox's shell, seq and test.
                ImageRecipe(
                    name="e2e-glibc-dns-testing-image",
                    reference_index=1,
                    files=(
                        ("/usr/bin/dig", "host:/usr/bin/dig", 0o755),
                        ("/usr/bin/getent", "host:/usr/bin/getent", 0o755),
                        ("/etc/nsswitch.conf", "text:e2e-nsswitch", 0o644),
                    ),
                    busybox=True,
                    host_libs=("/usr/bin/dig", "/usr/bin/getent"),
                    config=ImageConfig(cmd=("sh",)),
                ),
                _e2e_nginx_image("e2e-nginx-image", 2),
                _e2e_nginx_image("e2e-nginx-new-image", 3),
            ),
        ),
        Recipe(
            "kubernetes-previous",
            gomod="kubernetes-previous",  # main.go is a link to kubernetes/main.go
            builds=(
                GoBuild(
                    packages=(".",),
                    rename=(("kubernetes-previous", PREVIOUS_KUBE),),
                    xflags=kube_xflags(v["kubernetes-previous"], MODULE_TIME),
                ),
            ),
        ),
    ]

#!/usr/bin/env bash
# Smoke test of hack/cluster.sh: up, pods from the local registry, down, with timings.
#
#   hack/cluster/smoke.sh          # SMOKE_KEEP=1 leaves the cluster up at the end
#
# 1. starts the local registry (hack/registry.sh) unless it runs, pushes busybox to it
#    (go run ./hack/baseimage);
# 2. hack/cluster.sh up (the first run on a machine builds the Kubernetes binaries: minutes);
# 3. a hostNetwork pod running busybox: waits for Succeeded and checks `kubectl logs`;
# 4. a pod on the CNI bridge: checks that it got an address from the pod subnet;
# 5. a long-running pod: checks `kubectl exec`, and leaves it running for down to clean up;
# 6. a namespace enforcing Pod Security `baseline` rejects a privileged pod;
# 7. a claim of the default StorageClass (local-path): bound once its pod is scheduled, the
#    pod's file in the volume's directory on the host; deleting the claim removes the directory;
# 8. hack/cluster.sh down, which fails when anything is left behind.
# Needs root, like hack/cluster.sh.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "${root}"
cluster=${root}/hack/cluster.sh
t0=${SECONDS}
declare -A took

step() { echo "smoke: $*" >&2; }
fail() {
	echo "smoke: FAIL: $*" >&2
	exit 1
}

registry_started=0
if ! hack/registry.sh status; then
	hack/registry.sh start
	registry_started=1
fi
eval "$(hack/registry.sh env)"
t=${SECONDS}
busybox=$(go run ./hack/baseimage --registry "${SLIPWAY_REGISTRY}" | head -n1)
took[push]=$((SECONDS - t))
step "busybox is ${busybox}"

cleanup() {
	local rc=$?
	if [[ "${SMOKE_KEEP:-}" != 1 ]]; then
		if ((rc != 0)); then
			step "failed; the cluster's logs are in $(dirname "$("${cluster}" kubeconfig 2>/dev/null || echo .)")/logs"
		fi
		"${cluster}" down || rc=1
		if ((registry_started)); then
			hack/registry.sh stop || true
		fi
	fi
	exit "${rc}"
}
trap cleanup EXIT

t=${SECONDS}
"${cluster}" up
took[up]=$((SECONDS - t))
KUBECONFIG=$("${cluster}" kubeconfig)
export KUBECONFIG

# wait_phase POD PHASE SECONDS
wait_phase() {
	local phase i
	for ((i = 0; i < $3 * 5; i++)); do
		phase=$(kubectl get pod "$1" -o jsonpath='{.status.phase}' 2>/dev/null || true)
		[[ "${phase}" == "$2" ]] && return 0
		if [[ "${phase}" == Failed || ("${phase}" == Succeeded && "$2" != Succeeded) ]]; then
			kubectl describe pod "$1" >&2 || true
			fail "pod $1 is ${phase}"
		fi
		sleep 0.2
	done
	kubectl describe pod "$1" >&2 || true
	fail "pod $1 is not ${2} after $3 s (it is ${phase:-nothing})"
}

# 3. hostNetwork pod.
t=${SECONDS}
kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: smoke-hostnet
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: busybox
    image: ${busybox}
    command: ["sh", "-c", "echo hello from slipway; id -u"]
EOF
wait_phase smoke-hostnet Succeeded 120
took[pod]=$((SECONDS - t))
logs=$(kubectl logs smoke-hostnet)
[[ "${logs}" == *"hello from slipway"* ]] || fail "unexpected logs of smoke-hostnet: ${logs}"
step "hostNetwork pod Succeeded in ${took[pod]} s; kubectl logs: ${logs//$'\n'/ }"

# 4. pod on the CNI bridge.
t=${SECONDS}
kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: smoke-bridge
spec:
  restartPolicy: Never
  containers:
  - name: busybox
    image: ${busybox}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "ip -4 -o addr show eth0"]
EOF
wait_phase smoke-bridge Succeeded 120
took[bridge]=$((SECONDS - t))
logs=$(kubectl logs smoke-bridge)
subnet=${SLIPWAY_CLUSTER_POD_SUBNET:-10.217.0.0/24}
prefix=${subnet%.*}.
[[ "${logs}" == *"inet ${prefix}"* ]] || fail "smoke-bridge has no address in ${subnet}: ${logs}"
podip=$(kubectl get pod smoke-bridge -o jsonpath='{.status.podIP}')
step "bridge pod Succeeded in ${took[bridge]} s, pod IP ${podip}"

# 5. exec into a running pod; it stays for down.
t=${SECONDS}
kubectl apply -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: smoke-sleep
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: busybox
    image: ${busybox}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "3600"]
EOF
wait_phase smoke-sleep Running 120
out=$(kubectl exec smoke-sleep -- echo exec works)
[[ "${out}" == "exec works" ]] || fail "kubectl exec printed: ${out}"
took[exec]=$((SECONDS - t))
step "kubectl exec works (${took[exec]} s)"

# 6. Pod Security admission.
kubectl create namespace smoke-baseline >/dev/null
kubectl label namespace smoke-baseline pod-security.kubernetes.io/enforce=baseline >/dev/null
if out=$(kubectl -n smoke-baseline run privileged --image="${busybox}" --restart=Never \
	--overrides='{"spec":{"containers":[{"name":"privileged","image":"'"${busybox}"'","securityContext":{"privileged":true}}]}}' 2>&1); then
	fail "a privileged pod was admitted in a baseline namespace: ${out}"
fi
[[ "${out}" == *"violates PodSecurity"* ]] || fail "unexpected refusal: ${out}"
step "Pod Security baseline refuses a privileged pod"

# 7. The local-path-provisioner: a claim of the default class, a pod writing to it.
t=${SECONDS}
class=$(kubectl get storageclass -o jsonpath='{.items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")].metadata.name}')
[[ "${class}" == local-path ]] || fail "the default StorageClass is '${class}', want local-path"
kubectl apply -f - <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: smoke-claim
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 16Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: smoke-volume
spec:
  restartPolicy: Never
  containers:
  - name: busybox
    image: ${busybox}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo kept > /data/smoke.txt"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: smoke-claim
EOF
wait_phase smoke-volume Succeeded 120
pv=$(kubectl get pvc smoke-claim -o jsonpath='{.spec.volumeName}')
hostdir=$(kubectl get pv "${pv}" -o jsonpath='{.spec.hostPath.path}')
state_dir=$(dirname "$("${cluster}" kubeconfig)")
[[ "${hostdir}" == "${state_dir}/local-path/"* ]] || fail "volume ${pv} is at '${hostdir}', not under ${state_dir}/local-path"
[[ "$(cat "${hostdir}/smoke.txt" 2>&1)" == kept ]] || fail "${hostdir}/smoke.txt does not hold what the pod wrote"
kubectl delete pod smoke-volume --wait=true >/dev/null
kubectl delete pvc smoke-claim --wait=true >/dev/null
for ((i = 0; i < 150; i++)); do
	[[ -e "${hostdir}" ]] || break
	sleep 0.2
done
[[ ! -e "${hostdir}" ]] || fail "${hostdir} is still there 30 s after its claim was deleted"
took[volume]=$((SECONDS - t))
step "local-path: claim bound to ${pv} at ${hostdir}, removed with the claim (${took[volume]} s)"

if [[ "${SMOKE_KEEP:-}" == 1 ]]; then
	step "SMOKE_KEEP=1: the cluster stays up; export KUBECONFIG=${KUBECONFIG}"
	exit 0
fi
trap - EXIT
t=${SECONDS}
"${cluster}" down
took[down]=$((SECONDS - t))
if ((registry_started)); then
	hack/registry.sh stop
fi
step "PASS in $((SECONDS - t0)) s: push ${took[push]} s, up ${took[up]} s, hostNetwork pod ${took[pod]} s," \
	"bridge pod ${took[bridge]} s, exec ${took[exec]} s, volume ${took[volume]} s, down ${took[down]} s"

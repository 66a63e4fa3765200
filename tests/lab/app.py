"""The lab's application behind the edge, shared by the Kubernetes tests (tests/lab/kube.py) and
bench/kubernetes.py: agnhost netexec (one replica per worker) behind a Service and an Ingress of
class nginx. Plain data: no pytest here, so benches import it too."""

APP = """apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      # One replica per worker while both are up: a worker's loss leaves one serving.
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                labelSelector:
                  matchLabels: {{app: {name}}}
                topologyKey: kubernetes.io/hostname
      containers:
        - name: agnhost
          image: {image}
          args: ["netexec", "--http-port=8080"]
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe:
            httpGet: {{path: /healthz, port: http}}
            periodSeconds: 2
          securityContext:
            allowPrivilegeEscalation: false
            capabilities: {{drop: [ALL]}}
            runAsNonRoot: true
            runAsUser: 65534
            seccompProfile: {{type: RuntimeDefault}}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: {ns}
spec:
  ingressClassName: nginx
  rules:
    - host: {host}
      http:
        paths:
          - path: /
            pathType: Prefix
            backend:
              service:
                name: {name}
                port: {{name: http}}
"""

{{/* Names ------------------------------------------------------------------------------------ */}}
{{- define "falapp-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "falapp-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "falapp-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "falapp-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "falapp-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: the standard app.kubernetes.io/* set ----------------------------------------------- */}}
{{- define "falapp-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "falapp-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "falapp-operator.labels" -}}
helm.sh/chart: {{ include "falapp-operator.chart" . }}
{{ include "falapp-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: falapp-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The operator image: repository@digest, else repository:tag (tag defaults to appVersion) ------ */}}
{{- define "falapp-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
RBAC rules. Each verb is one the operator (falapp_operator/k8s/client.py) or kopf makes; nothing else.
*/}}

{{/* Cluster-scoped, or read cluster-wide in every mode: free GPUs are counted over all pods. */}}
{{- define "falapp-operator.clusterRules" -}}
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [fal.ai]
  resources: [machinetypes]
  verbs: [get, list, watch]
- apiGroups: [fal.ai]
  resources: [machinetypes/status]
  verbs: [patch]
# a MachineType whose nodes a Karpenter NodePool makes counts as autoscaled
- apiGroups: [karpenter.sh]
  resources: [nodepools]
  verbs: [get, list, watch]
# namespace labels decide which MachineTypes a namespace may use (spec.namespaceSelector)
- apiGroups: [""]
  resources: [namespaces]
  verbs: [get, list, watch]
# Karpenter's NodePool CRD coming or going: NodePools are watched while it serves them (that CRD
# alone: its LIST and watch name it by a metadata.name field selector)
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  resourceNames: [nodepools.karpenter.sh]
  verbs: [list, watch]
{{- end }}

{{/* Where FalApps live: cluster-wide, or in each watched namespace. */}}
{{- define "falapp-operator.namespacedRules" -}}
# read only: the operator writes an app's status, never the app
- apiGroups: [fal.ai]
  resources: [falapps]
  verbs: [get, list, watch]
- apiGroups: [fal.ai]
  resources: [falapps/status]
  verbs: [get, patch]
# children name their FalApp with blockOwnerDeletion: OwnerReferencesPermissionEnforcement asks for this
- apiGroups: [fal.ai]
  resources: [falapps/finalizers]
  verbs: [update]
# one Deployment per machine type in use (server-side apply; a merge patch resizes an unlisted type's)
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# the pod-deletion-cost annotation: which replica the ReplicaSet removes first; a deleted Deployment's
# pods that no node runs, and their ReplicaSets first, are deleted at once (the scheduler would try each
# before the replacements elsewhere)
- apiGroups: [""]
  resources: [pods]
  verbs: [patch, delete]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [delete]
# posting events (operator and kopf); watching autoscaler events (TriggeredScaleUp, Nominated, ...)
- apiGroups: [""]
  resources: [events]
  verbs: [create, list, watch]
{{- end }}

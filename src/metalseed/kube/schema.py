"""Field names of the component configuration files of the pinned Kubernetes (1.36): what the
model accepts in ``kubelet_settings`` and ``kube_proxy_settings``, so a misspelt field is refused
(with a suggestion) before any host is touched instead of being ignored by the component.

Data read from the json tags of ``KubeletConfiguration`` (k8s.io/kubelet v0.36.3
``config/v1beta1/types.go``) and ``KubeProxyConfiguration`` (k8s.io/kube-proxy v0.36.3
``config/v1alpha1/types.go``); regenerate them with each Kubernetes minor.
"""

KUBELET_CONFIGURATION_VERSION = "kubelet.config.k8s.io/v1beta1"
KUBE_PROXY_CONFIGURATION_VERSION = "kubeproxy.config.k8s.io/v1alpha1"

KUBELET_CONFIGURATION_FIELDS = frozenset({
    "enableServer", "staticPodPath", "podLogsDir", "syncFrequency", "fileCheckFrequency",
    "httpCheckFrequency", "staticPodURL", "staticPodURLHeader", "address", "port", "readOnlyPort",
    "tlsCertFile", "tlsPrivateKeyFile", "tlsCipherSuites", "tlsCurvePreferences", "tlsMinVersion",
    "rotateCertificates", "serverTLSBootstrap", "authentication", "authorization", "registryPullQPS",
    "registryBurst", "imagePullCredentialsVerificationPolicy", "preloadedImagesVerificationAllowlist",
    "eventRecordQPS", "eventBurst", "enableDebuggingHandlers", "enableContentionProfiling",
    "healthzPort", "healthzBindAddress", "oomScoreAdj", "clusterDomain", "clusterDNS",
    "streamingConnectionIdleTimeout", "nodeStatusUpdateFrequency", "nodeStatusReportFrequency",
    "nodeLeaseDurationSeconds", "imageMinimumGCAge", "imageMaximumGCAge", "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent", "volumeStatsAggPeriod", "kubeletCgroups", "systemCgroups",
    "cgroupRoot", "cgroupsPerQOS", "cgroupDriver", "cpuManagerPolicy", "singleProcessOOMKill",
    "cpuManagerPolicyOptions", "cpuManagerReconcilePeriod", "memoryManagerPolicy",
    "topologyManagerPolicy", "topologyManagerScope", "topologyManagerPolicyOptions", "qosReserved",
    "runtimeRequestTimeout", "hairpinMode", "maxPods", "podCIDR", "podPidsLimit", "resolvConf",
    "runOnce", "cpuCFSQuota", "cpuCFSQuotaPeriod", "nodeStatusMaxImages", "maxOpenFiles", "contentType",
    "kubeAPIQPS", "kubeAPIBurst", "serializeImagePulls", "maxParallelImagePulls", "evictionHard",
    "evictionSoft", "evictionSoftGracePeriod", "evictionPressureTransitionPeriod",
    "evictionMaxPodGracePeriod", "evictionMinimumReclaim", "mergeDefaultEvictionSettings", "podsPerCore",
    "enableControllerAttachDetach", "protectKernelDefaults", "makeIPTablesUtilChains",
    "iptablesMasqueradeBit", "iptablesDropBit", "featureGates", "failSwapOn", "memorySwap",
    "containerLogMaxSize", "containerLogMaxFiles", "containerLogMaxWorkers",
    "containerLogMonitorInterval", "configMapAndSecretChangeDetectionStrategy", "systemReserved",
    "kubeReserved", "reservedSystemCPUs", "showHiddenMetricsForVersion", "systemReservedCgroup",
    "kubeReservedCgroup", "enforceNodeAllocatable", "allowedUnsafeSysctls", "volumePluginDir",
    "providerID", "kernelMemcgNotification", "logging", "enableSystemLogHandler", "enableSystemLogQuery",
    "shutdownGracePeriod", "shutdownGracePeriodCriticalPods", "shutdownGracePeriodByPodPriority",
    "crashLoopBackOff", "reservedMemory", "enableProfilingHandler", "enableDebugFlagsHandler",
    "seccompDefault", "memoryThrottlingFactor", "memoryReservationPolicy", "registerWithTaints",
    "registerNode", "tracing", "localStorageCapacityIsolation", "containerRuntimeEndpoint",
    "imageServiceEndpoint", "failCgroupV1", "userNamespaces",
})

KUBE_PROXY_CONFIGURATION_FIELDS = frozenset({
    "featureGates", "clientConnection", "logging", "hostnameOverride", "bindAddress",
    "healthzBindAddress", "metricsBindAddress", "bindAddressHardFail", "enableProfiling",
    "showHiddenMetricsForVersion", "mode", "iptables", "ipvs", "nftables", "winkernel",
    "detectLocalMode", "detectLocal", "clusterCIDR", "nodePortAddresses", "oomScoreAdj", "conntrack",
    "configSyncPeriod", "portRange", "windowsRunAsService",
})

# Nested structs whose own fields are checked too (a misspelt ``conntrack.maxPerCor`` would
# otherwise be dropped by the component as silently as a top-level one). From the same types.go
# files and component-base ``logs/api/v1/types.go`` (LoggingConfiguration).
LOGGING_CONFIGURATION_FIELDS = frozenset({"format", "flushFrequency", "verbosity", "vmodule",
                                          "options"})

KUBELET_NESTED_FIELDS: dict[str, frozenset[str]] = {
    "logging": LOGGING_CONFIGURATION_FIELDS,
    "memorySwap": frozenset({"swapBehavior"}),
    "crashLoopBackOff": frozenset({"maxContainerRestartPeriod"}),
    "userNamespaces": frozenset({"idsPerPod"}),
}

KUBE_PROXY_NESTED_FIELDS: dict[str, frozenset[str]] = {
    "logging": LOGGING_CONFIGURATION_FIELDS,
    "iptables": frozenset({"masqueradeBit", "masqueradeAll", "localhostNodePorts", "syncPeriod",
                           "minSyncPeriod"}),
    "ipvs": frozenset({"syncPeriod", "minSyncPeriod", "scheduler", "excludeCIDRs", "strictARP",
                       "tcpTimeout", "tcpFinTimeout", "udpTimeout"}),
    "nftables": frozenset({"masqueradeBit", "masqueradeAll", "syncPeriod", "minSyncPeriod"}),
    "conntrack": frozenset({"maxPerCore", "min", "tcpEstablishedTimeout", "tcpCloseWaitTimeout",
                            "tcpBeLiberal", "udpTimeout", "udpStreamTimeout"}),
    "winkernel": frozenset({"networkName", "sourceVip", "enableDSR", "rootHnsEndpointName",
                            "forwardHealthCheckVip"}),
    "detectLocal": frozenset({"bridgeInterface", "interfaceNamePrefix"}),
}

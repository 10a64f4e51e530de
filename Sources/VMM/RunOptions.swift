import HostSys

/// How a run behaves beyond the config file (command-line choices).
public struct RunOptions: Sendable {
    /// Stop the guest after this many seconds (overrides the config's run.timeout).
    public var timeoutSeconds: Double?
    /// Forward the terminal's input to the guest (raw mode). Default: when stdin is a TTY.
    public var interactive: Bool?
    /// Try to run even on KVM-PVM, which cannot run stock Linux guests.
    public var allowPVM = false
    /// Finish successfully as soon as the console matches one of these.
    public var expect: [String] = []
    /// Finish with failure as soon as the console matches one of these.
    public var failOn: [String] = []
    /// Keep the full console output in this file.
    public var consoleLog: String?
    /// Write a JSON summary here.
    public var reportPath: String?

    /// The lab's workaround (`SWIFTVMM_LAB_CR3_ALIAS=1`, tests/lab/README.md,
    /// "One kernel instruction"): guest RAM below 4 GiB is mapped a second
    /// time at 4 GiB, so a guest CR3 whose bit 32 the lab's emulated CPU set
    /// by mistake still reaches the page tables; the 64-bit PCI window moves
    /// above that copy. For guests whose RAM is all below 4 GiB; real hosts
    /// have no use for it.
    public var ramAliasAt4G = false

    /// The seccomp sandbox, installed once setup is complete (`Sandbox`).
    public var seccomp: SeccompMode = .kill

    /// /dev/kvm, or "fd:N": the descriptor a launcher opened (`--kvm`).
    public var kvmPath = "/dev/kvm"
    /// /dev/iommu, or "fd:N" (`--iommufd`): for passthrough.
    public var iommufdPath = "/dev/iommu"

    /// After SIGTERM presses the power button, how long the guest has to power off.
    public var powerOffGrace: Double = 20

    public init() {}
}

/// A validated VM description: what `ConfigLoader` makes of a TOML file plus
/// command-line overrides. Paths are absolute; every value is in range.
/// The schema is documented in `configs/README.md`.
public struct VMConfig: Equatable, Sendable {
    /// Number of vCPUs, 1...254.
    public var vcpus: Int
    /// Guest RAM in bytes, a multiple of 4 KiB in 16 MiB...1 TiB.
    public var memoryBytes: UInt64
    /// Absolute path of the kernel (bzImage, or ELF vmlinux with a PVH note).
    public var kernelPath: String
    /// Absolute path of the initramfs, if any.
    public var initramfsPath: String?
    /// The kernel command line.
    public var cmdline: String
    /// Where the serial console goes.
    public var serial: SerialConfig
    /// Stop the guest after this many seconds; nil for no limit.
    public var timeoutSeconds: Double?
    /// virtio-blk disks in file order, which is their order on the PCI bus
    /// (so the guest names them /dev/vda, /dev/vdb, ...).
    public var disks: [DiskConfig]
    /// virtio-net devices in file order (also their order on the PCI bus).
    public var nets: [NetConfig]
    /// Where the virtio console (the guest's hvc0) goes; `.off` for no
    /// virtio-console device at all.
    public var virtioConsole: SerialConfig
    /// Whether the virtio console sits behind the vIOMMU (`console.iommu`).
    public var virtioConsoleIOMMU: Bool
    /// Whether there is a virtio-rng device.
    public var rng: Bool
    /// Whether the virtio-rng sits behind the vIOMMU (`rng.iommu`).
    public var rngIOMMU: Bool
    /// The vIOMMU, or nil for none (the default).
    public var viommu: VIOMMUConfig?
    /// Host PCI devices assigned to the guest through iommufd and VFIO, in
    /// file order, then `--passthrough` order. Each device is listed once.
    public var passthrough: [PassthroughConfig]
    /// Devices served by other processes over vfio-user, in file order, then
    /// `--vfio-user` order. Each socket is listed once.
    public var vfioUser: [VFIOUserConfig]
    /// Back guest RAM with 2 MiB hugetlbfs pages (`machine.hugepages`);
    /// `memoryBytes` is then a multiple of 2 MiB.
    public var hugePages: Bool
    /// Size of the guest's 64-bit PCI MMIO window above RAM
    /// (`machine.pci_mmio64_size`, default 64 GiB): where 64-bit BARs go.
    public var pciMMIO64Size: UInt64
    /// Absolute path of the config file this came from ("" if none).
    public var configPath: String

    public static let defaultVCPUs = 1
    public static let defaultMemoryBytes: UInt64 = 512 << 20
    public static let defaultCmdline = "console=ttyS0 reboot=k panic=-1"

    public init(vcpus: Int = VMConfig.defaultVCPUs,
                memoryBytes: UInt64 = VMConfig.defaultMemoryBytes,
                kernelPath: String,
                initramfsPath: String? = nil,
                cmdline: String = VMConfig.defaultCmdline,
                serial: SerialConfig = .terminal,
                timeoutSeconds: Double? = nil,
                disks: [DiskConfig] = [],
                nets: [NetConfig] = [],
                virtioConsole: SerialConfig = .off,
                virtioConsoleIOMMU: Bool = true,
                rng: Bool = false,
                rngIOMMU: Bool = true,
                viommu: VIOMMUConfig? = nil,
                passthrough: [PassthroughConfig] = [],
                vfioUser: [VFIOUserConfig] = [],
                hugePages: Bool = false,
                pciMMIO64Size: UInt64 = 64 << 30,
                configPath: String = "") {
        self.vcpus = vcpus
        self.memoryBytes = memoryBytes
        self.kernelPath = kernelPath
        self.initramfsPath = initramfsPath
        self.cmdline = cmdline
        self.serial = serial
        self.timeoutSeconds = timeoutSeconds
        self.disks = disks
        self.nets = nets
        self.virtioConsole = virtioConsole
        self.virtioConsoleIOMMU = virtioConsoleIOMMU
        self.rng = rng
        self.rngIOMMU = rngIOMMU
        self.viommu = viommu
        self.passthrough = passthrough
        self.vfioUser = vfioUser
        self.hugePages = hugePages
        self.pciMMIO64Size = pciMMIO64Size
        self.configPath = configPath
    }

    /// `timeoutSeconds` as a `Duration` (to the millisecond; nil if unset or
    /// not finite, clamped if beyond what a `Duration` of milliseconds holds).
    public var timeout: Duration? {
        guard let s = timeoutSeconds, s.isFinite else { return nil }
        let ms = (s * 1000).rounded()
        guard let whole = Int64(exactly: ms) else { return ms > 0 ? .milliseconds(Int64.max) : .zero }
        return .milliseconds(whole)
    }
}

/// Where a guest console goes: the serial port (COM1, `VMConfig.serial`)
/// or the virtio console (hvc0, `VMConfig.virtioConsole`).
public enum SerialConfig: Equatable, Sendable {
    /// The VMM's terminal (stdout; stdin is forwarded when it is a terminal).
    case terminal
    /// Written to the file at this absolute path (truncated first).
    case file(String)
    /// For the serial port: discarded (the UART still exists, so the guest
    /// sees no difference). For the virtio console: no device.
    case off
}

/// Values from the command line that replace config keys. Strings, so that
/// "--vcpus x" gets the same checks and messages as `vcpus = "x"`.
public struct ConfigOverrides: Equatable, Sendable {
    public var kernel: String?
    public var initramfs: String?
    public var cmdline: String?
    public var memory: String?
    public var vcpus: String?
    /// `--passthrough DEVICE` values, each appended to `VMConfig.passthrough`
    /// (checked like `[[passthrough]]` device keys).
    public var passthrough: [String]
    /// `--viommu`: a vIOMMU with `[viommu]`'s settings, or the defaults.
    public var viommu: Bool
    /// `--vfio-user SOCKET` values, each appended to `VMConfig.vfioUser`
    /// with `dma = "fd"` (checked like `[[vfio_user]]` socket keys).
    public var vfioUser: [String]

    public init(kernel: String? = nil, initramfs: String? = nil, cmdline: String? = nil,
                memory: String? = nil, vcpus: String? = nil, passthrough: [String] = [], viommu: Bool = false,
                vfioUser: [String] = []) {
        self.kernel = kernel
        self.initramfs = initramfs
        self.cmdline = cmdline
        self.memory = memory
        self.vcpus = vcpus
        self.passthrough = passthrough
        self.viommu = viommu
        self.vfioUser = vfioUser
    }

    public var isEmpty: Bool {
        kernel == nil && initramfs == nil && cmdline == nil && memory == nil && vcpus == nil && passthrough.isEmpty
            && !viommu && vfioUser.isEmpty
    }
}

/// The schema: top-level tables and their keys, in the order issues are
/// reported. Documented for users in `configs/README.md`.
enum Schema {
    /// `[name]` once, or `[[name]]` zero or more times.
    enum Shape: Equatable {
        case table
        case arrayOfTables
    }

    static let tables: [(name: String, shape: Shape, keys: [String])] = [
        ("machine", .table, ["vcpus", "memory", "hugepages", "pci_mmio64_size"]),
        ("kernel", .table, ["path", "initramfs", "cmdline"]),
        ("serial", .table, ["mode", "path"]),
        ("console", .table, ["mode", "path", "iommu"]),
        ("disk", .arrayOfTables, ["path", "read_only", "cache", "iommu", "queues", "aio"]),
        ("net", .arrayOfTables, ["tap", "mac", "iommu", "vhost", "queues"]),
        ("rng", .table, ["enabled", "iommu"]),
        ("passthrough", .arrayOfTables, ["device", "bars", "iommu"]),
        ("vfio_user", .arrayOfTables, ["socket", "dma", "bars"]),
        ("viommu", .table, ["enabled", "max_domains", "max_mappings", "poll_us"]),
        ("run", .table, ["timeout"]),
    ]

    static func keys(of table: String) -> [String] {
        tables.first { $0.name == table }?.keys ?? []
    }

    static func shape(of table: String) -> Shape {
        tables.first { $0.name == table }?.shape ?? .table
    }

    /// How a table is written in a file: `[machine]`, `[[disk]]`.
    static func header(_ table: String) -> String {
        shape(of: table) == .arrayOfTables ? "[[\(table)]]" : "[\(table)]"
    }

    /// vCPUs: xAPIC IDs are 8 bits and 0xFF is the broadcast ID (Intel SDM
    /// Vol. 3A, "Local APIC ID"), so 0...254 are usable.
    static let vcpuRange = 1...254
    /// Below 16 MiB a kernel with an initramfs does not come up; above 1 TiB
    /// is beyond what this VMM's memory map is meant for.
    static let minMemory: UInt64 = 16 << 20
    static let maxMemory: UInt64 = 1 << 40
    /// KVM_SET_USER_MEMORY_REGION needs page-multiple sizes
    /// (Documentation/virt/kvm/api.rst); x86 pages are 4 KiB.
    static let pageSize: UInt64 = 4096
    /// `machine.hugepages` backs RAM with 2 MiB pages (the x86 PMD page size,
    /// Intel SDM Vol. 3A, 4.5 "4-Level Paging"), so RAM is a multiple of it.
    static let hugePageSize: UInt64 = 2 << 20
    /// The guest's 64-bit PCI window (`machine.pci_mmio64_size`): whole GiB
    /// (it starts on a 1 GiB boundary above RAM), at most 1 TiB so that with
    /// 1 TiB of RAM it still ends below a 41-bit guest physical address.
    static let defaultPCIMMIO64Size: UInt64 = 64 << 30
    static let pciMMIO64Granule: UInt64 = 1 << 30
    static let maxPCIMMIO64Size: UInt64 = 1 << 40
    /// Linux x86 COMMAND_LINE_SIZE is 2048 including the NUL
    /// (arch/x86/include/asm/setup.h).
    static let maxCmdlineBytes = 2047
    /// A UNIX socket address holds a path of at most 107 bytes (sun_path is
    /// 108 bytes with the NUL, linux/un.h UNIX_PATH_MAX).
    static let maxSocketPath = 107
    /// `[serial]` and `[console]` modes.
    static let outputModes = ["terminal", "file", "off"]
    /// `[[disk]] queues` (virtio-blk `num_queues`; VirtioBlock.maxQueues).
    public static let diskQueueRange = 1...64
    /// `[[net]] queues`: queue pairs (virtio-net `max_virtqueue_pairs`, one
    /// TAP queue and vhost-net instance each).
    public static let netQueueRange = 1...16
    /// IFNAMSIZ is 16 including the terminating NUL (include/uapi/linux/if.h),
    /// so a TAP name has at most 15 bytes.
    static let maxInterfaceNameBytes = 15
    /// Virtio and assigned devices are function 0 of a slot on PCI bus 0, and
    /// the root bus hands out slots 1...31 (slot 0 is the host bridge;
    /// Sources/PCI/README.md).
    static let pciSlots = 31
}

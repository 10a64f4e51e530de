import Foundation
import XCTest

/// A fake `/sys` in a temporary directory, laid out like the real one:
/// devices with vendor/device/class/config files and driver, iommu_group,
/// iommu symlinks; groups under kernel/iommu_groups; IOMMUs under class/iommu.
final class FakeSysfs {
    let root: String
    private let fm = FileManager.default

    init() throws {
        root = NSTemporaryDirectory() + "swiftvmm-sysfs-\(UUID().uuidString)"
        try fm.createDirectory(atPath: "\(root)/bus/pci/devices", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/kernel/iommu_groups", withIntermediateDirectories: true)
        try fm.createDirectory(atPath: "\(root)/class/iommu", withIntermediateDirectories: true)
    }

    deinit { try? fm.removeItem(atPath: root) }

    /// A VT-d unit `name` with the given ECAP value.
    func addVTd(_ name: String, ecap: UInt64, cap: UInt64 = 0xd2_0088_10ef_0466) throws {
        let dir = "\(root)/class/iommu/\(name)/intel-iommu"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try String(cap, radix: 16).write(toFile: "\(dir)/cap", atomically: true, encoding: .utf8)
        try (String(ecap, radix: 16) + "\n").write(toFile: "\(dir)/ecap", atomically: true, encoding: .utf8)
    }

    /// A PCI device. `config` nil: no config file.
    func addDevice(_ bdf: String, vendor: UInt16 = 0x8086, device: UInt16 = 0x10d3, classCode: UInt32 = 0x020000,
                   driver: String? = nil, group: Int? = nil, iommu: String? = nil, cdev: String? = nil,
                   config: [UInt8]? = nil) throws {
        let dir = "\(root)/bus/pci/devices/\(bdf)"
        try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try String(format: "0x%04x\n", vendor).write(toFile: "\(dir)/vendor", atomically: true, encoding: .utf8)
        try String(format: "0x%04x\n", device).write(toFile: "\(dir)/device", atomically: true, encoding: .utf8)
        try String(format: "0x%06x\n", classCode).write(toFile: "\(dir)/class", atomically: true, encoding: .utf8)
        if let driver {
            let d = "\(root)/bus/pci/drivers/\(driver)"
            try fm.createDirectory(atPath: d, withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: "\(dir)/driver", withDestinationPath: "../../../../bus/pci/drivers/\(driver)")
        }
        if let group {
            let g = "\(root)/kernel/iommu_groups/\(group)/devices"
            try fm.createDirectory(atPath: g, withIntermediateDirectories: true)
            try fm.createSymbolicLink(atPath: "\(dir)/iommu_group", withDestinationPath: "../../../../kernel/iommu_groups/\(group)")
            try fm.createSymbolicLink(atPath: "\(g)/\(bdf)", withDestinationPath: "../../../../bus/pci/devices/\(bdf)")
        }
        if let iommu {
            try fm.createSymbolicLink(atPath: "\(dir)/iommu", withDestinationPath: "../../../../class/iommu/\(iommu)")
        }
        if let cdev {
            try fm.createDirectory(atPath: "\(dir)/vfio-dev/\(cdev)", withIntermediateDirectories: true)
        }
        if let config {
            try Data(config).write(to: URL(fileURLWithPath: "\(dir)/config"))
        }
    }

    /// 256 bytes of config space: a PCIe endpoint with a PM capability at 0x40
    /// chaining to the PCIe capability at 0x50 (then MSI at 0x70), Device
    /// Control's No Snoop bit as given.
    static func pcieConfig(noSnoop: Bool) -> [UInt8] {
        var c = [UInt8](repeating: 0, count: 256)
        c[0] = 0x86; c[1] = 0x80; c[2] = 0xd3; c[3] = 0x10
        c[0x06] = 0x10 // Status: Capabilities List
        c[0x34] = 0x40
        c[0x40] = 0x01; c[0x41] = 0x50 // PM -> 0x50
        c[0x50] = 0x10; c[0x51] = 0x70 // PCIe -> 0x70
        let control: UInt16 = 0x2810 & ~(1 << 11) | (noSnoop ? 1 << 11 : 0) // MPS/MRRS bits, RO
        c[0x58] = UInt8(control & 0xff); c[0x59] = UInt8(control >> 8)
        c[0x70] = 0x05; c[0x71] = 0x00 // MSI, end
        return c
    }
}

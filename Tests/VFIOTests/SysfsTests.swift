import Foundation
import TestFakes
import XCTest
@testable import VFIO

final class SysfsTests: XCTestCase {
    let sc: UInt64 = 0xf0_0f5e | 0x80
    let noSC: UInt64 = 0xf0_0f5e & ~0x80

    func testViableGroupWithSnoopControl() throws {
        let fs = try FakeSysfs()
        try fs.addVTd("dmar0", ecap: sc)
        try fs.addDevice("0000:00:02.0", driver: "vfio-pci", group: 3, iommu: "dmar0", cdev: "vfio0",
                         config: FakeSysfs.pcieConfig(noSnoop: true))
        let d = SysfsDiscovery(root: fs.root)
        let dev = try d.checkAssignable("0000:00:02.0")
        XCTAssertEqual(dev.vendorID, 0x8086)
        XCTAssertEqual(dev.deviceID, 0x10d3)
        XCTAssertEqual(dev.classCode, 0x020000)
        XCTAssertEqual(dev.driver, "vfio-pci")
        XCTAssertEqual(dev.iommuGroup, 3)
        XCTAssertEqual(dev.groupPeers, [])
        XCTAssertTrue(dev.viable)
        XCTAssertEqual(dev.cdev, "/dev/vfio/devices/vfio0")
        XCTAssertEqual(dev.iommu?.name, "dmar0")
        XCTAssertEqual(dev.iommu?.canEnforceSnoop, true)
        XCTAssertEqual(dev.noSnoopEnabled, true)
        XCTAssertFalse(dev.wbinvdMustFlush, dev.wbinvd)
        XCTAssertEqual(d.iommuGroupCount(), 1)
    }

    func testNoSnoopControlAndNoSnoopOnMustFlush() throws {
        let fs = try FakeSysfs()
        try fs.addVTd("dmar0", ecap: noSC)
        try fs.addDevice("0000:00:02.0", driver: "vfio-pci", group: 3, iommu: "dmar0", cdev: "vfio0",
                         config: FakeSysfs.pcieConfig(noSnoop: true))
        let dev = SysfsDiscovery(root: fs.root).describe("0000:00:02.0")
        XCTAssertEqual(dev.iommu?.canEnforceSnoop, false)
        XCTAssertEqual(dev.noSnoopEnabled, true)
        XCTAssertTrue(dev.wbinvdMustFlush)
        XCTAssertTrue(dev.wbinvd.contains("No Snoop enabled"), dev.wbinvd)
    }

    func testNoSnoopControlAndNoSnoopOffStillFlushes() throws {
        let fs = try FakeSysfs()
        try fs.addVTd("dmar0", ecap: noSC)
        try fs.addDevice("0000:00:02.0", driver: "vfio-pci", group: 3, iommu: "dmar0", cdev: "vfio0",
                         config: FakeSysfs.pcieConfig(noSnoop: false))
        let dev = SysfsDiscovery(root: fs.root).describe("0000:00:02.0")
        XCTAssertEqual(dev.noSnoopEnabled, false)
        XCTAssertTrue(dev.wbinvdMustFlush)
        XCTAssertTrue(dev.wbinvd.contains("coherent in practice"), dev.wbinvd)
    }

    func testNonViableGroupNamesTheOtherMember() throws {
        let fs = try FakeSysfs()
        try fs.addVTd("dmar0", ecap: sc)
        try fs.addDevice("0000:00:02.0", driver: "vfio-pci", group: 5, iommu: "dmar0", cdev: "vfio0")
        try fs.addDevice("0000:00:02.1", driver: "e1000e", group: 5, iommu: "dmar0")
        try fs.addDevice("0000:00:01.0", classCode: 0x060400, driver: "pcieport", group: 5, iommu: "dmar0")
        let d = SysfsDiscovery(root: fs.root)
        XCTAssertThrowsError(try d.checkAssignable("0000:00:02.0")) { e in
            guard case let VFIOError.groupNotViable(bdf, group, blockers) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(bdf, "0000:00:02.0")
            XCTAssertEqual(group, 5)
            XCTAssertEqual(blockers, [GroupMember(bdf: "0000:00:02.1", driver: "e1000e", isBridge: false)])
            XCTAssertTrue("\(e)".contains("0000:00:02.1 (e1000e)"), "\(e)")
        }
        let dev = d.describe("0000:00:02.0")
        XCTAssertFalse(dev.viable)
        XCTAssertEqual(dev.groupPeers.map(\.bdf), ["0000:00:01.0", "0000:00:02.1"])
        XCTAssertEqual(dev.groupPeers.first?.isBridge, true)
    }

    func testBridgesAndUnboundPeersAreViable() throws {
        let fs = try FakeSysfs()
        try fs.addDevice("0000:00:02.0", driver: "vfio-pci", group: 5, cdev: "vfio3")
        try fs.addDevice("0000:00:02.1", group: 5)
        try fs.addDevice("0000:00:01.0", classCode: 0x060400, driver: "pcieport", group: 5)
        try fs.addDevice("0000:00:02.2", driver: "pci-stub", group: 5)
        XCTAssertTrue(try SysfsDiscovery(root: fs.root).checkAssignable("0000:00:02.0").viable)
    }

    func testNotBoundToVFIOPrintsTheCommands() throws {
        let fs = try FakeSysfs()
        try fs.addDevice("0000:00:03.0", driver: "e1000e", group: 4)
        let d = SysfsDiscovery(root: fs.root)
        XCTAssertThrowsError(try d.checkAssignable("0000:00:03.0")) { e in
            guard case let VFIOError.notBoundToVFIO(_, driver, commands) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(driver, "e1000e")
            XCTAssertEqual(commands, [
                "echo vfio-pci > \(fs.root)/bus/pci/devices/0000:00:03.0/driver_override",
                "echo 0000:00:03.0 > \(fs.root)/bus/pci/devices/0000:00:03.0/driver/unbind",
                "echo 0000:00:03.0 > \(fs.root)/bus/pci/drivers_probe",
            ])
            XCTAssertTrue("\(e)".contains("bound to e1000e"))
        }
        // Unbound: no unbind step.
        try fs.addDevice("0000:00:04.0", group: 6)
        XCTAssertThrowsError(try d.checkAssignable("0000:00:04.0")) { e in
            guard case let VFIOError.notBoundToVFIO(_, nil, commands) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(commands.count, 2)
        }
    }

    func testNoIOMMU() throws {
        let fs = try FakeSysfs()
        try fs.addDevice("0000:00:03.0", driver: "e1000e")
        let d = SysfsDiscovery(root: fs.root)
        XCTAssertEqual(d.iommuGroupCount(), 0)
        XCTAssertThrowsError(try d.checkAssignable("0000:00:03.0")) { e in
            XCTAssertEqual(e as? VFIOError, .noIOMMUGroup(bdf: "0000:00:03.0"))
            XCTAssertTrue("\(e)".contains("intel_iommu=on"))
        }
        let dev = d.describe("0000:00:03.0")
        XCTAssertNil(dev.iommuGroup)
        XCTAssertNil(dev.iommu)
        XCTAssertTrue(dev.wbinvdMustFlush)
        XCTAssertThrowsError(try d.checkAssignable("0000:09:00.0")) { e in
            XCTAssertEqual(e as? VFIOError, .deviceNotFound(bdf: "0000:09:00.0"))
        }
    }

    func testBoundWithoutCdev() throws {
        let fs = try FakeSysfs()
        try fs.addDevice("0000:00:02.0", driver: "vfio-pci", group: 3)
        XCTAssertThrowsError(try SysfsDiscovery(root: fs.root).checkAssignable("0000:00:02.0")) { e in
            XCTAssertEqual(e as? VFIOError, .noCdev(bdf: "0000:00:02.0"))
        }
    }

    func testEcapParsing() {
        XCTAssertEqual(SysfsDiscovery.parseHex("f0050da"), 0xf0050da)
        XCTAssertEqual(SysfsDiscovery.parseHex("0x80"), 0x80)
        XCTAssertNil(SysfsDiscovery.parseHex("zz"))
        XCTAssertNil(SysfsDiscovery.parseHex(""))
        XCTAssertNil(SysfsDiscovery.parseHex("1ffffffffffffffff"))
    }

    // MARK: - Config space

    func testConfigNoSnoop() {
        XCTAssertEqual(PCIConfigParser.noSnoop(config: FakeSysfs.pcieConfig(noSnoop: true)), .enabled)
        XCTAssertEqual(PCIConfigParser.noSnoop(config: FakeSysfs.pcieConfig(noSnoop: false)), .disabled)
        XCTAssertEqual(try PCIConfigParser.findCapability(0x05, in: FakeSysfs.pcieConfig(noSnoop: false)).get(), 0x70)
    }

    func testConfigWithoutCapabilities() {
        var c = FakeSysfs.pcieConfig(noSnoop: true)
        c[0x06] = 0
        XCTAssertEqual(PCIConfigParser.noSnoop(config: c), .noPCIeCapability)
        c = FakeSysfs.pcieConfig(noSnoop: true)
        c[0x51] = 0; c[0x50] = 0x09 // PCIe cap replaced by vendor-specific: conventional PCI
        XCTAssertEqual(PCIConfigParser.noSnoop(config: c), .noPCIeCapability)
    }

    func testTruncatedConfig() throws {
        // An unprivileged read of config returns 64 bytes.
        let short = Array(FakeSysfs.pcieConfig(noSnoop: true).prefix(64))
        guard case let .unknown(r) = PCIConfigParser.noSnoop(config: short) else { return XCTFail() }
        XCTAssertTrue(r.contains("truncated at 64"), r)
        // Cut inside the PCIe capability, before Device Control.
        let cut = Array(FakeSysfs.pcieConfig(noSnoop: true).prefix(0x58))
        guard case let .unknown(r2) = PCIConfigParser.noSnoop(config: cut) else { return XCTFail() }
        XCTAssertTrue(r2.contains("Device Control"), r2)
        guard case .unknown = PCIConfigParser.noSnoop(config: [1, 2, 3]) else { return XCTFail() }
        // Through sysfs: unknown No Snoop => assume the worst.
        let fs = try FakeSysfs()
        try fs.addVTd("dmar0", ecap: noSC)
        try fs.addDevice("0000:00:02.0", driver: "vfio-pci", group: 3, iommu: "dmar0", cdev: "vfio0", config: short)
        let dev = SysfsDiscovery(root: fs.root).describe("0000:00:02.0")
        XCTAssertNil(dev.noSnoopEnabled)
        XCTAssertTrue(dev.noSnoopNote?.contains("needs root") ?? false)
        XCTAssertTrue(dev.wbinvdMustFlush)
    }

    func testCapabilityLoopAndBadPointers() {
        var c = FakeSysfs.pcieConfig(noSnoop: true)
        c[0x41] = 0x40 // PM points at itself
        guard case let .unknown(r) = PCIConfigParser.noSnoop(config: c) else { return XCTFail() }
        XCTAssertTrue(r.contains("loops"), r)
        c = FakeSysfs.pcieConfig(noSnoop: true)
        c[0x34] = 0x10 // into the header
        guard case .unknown = PCIConfigParser.noSnoop(config: c) else { return XCTFail() }
        c = FakeSysfs.pcieConfig(noSnoop: true)
        c[0x41] = 0xFF // masked to 0xFC, past a 0xFD-byte file
        guard case .unknown = PCIConfigParser.noSnoop(config: Array(c.prefix(0xFD))) else { return XCTFail() }
        // A long two-element loop still ends.
        c = FakeSysfs.pcieConfig(noSnoop: true)
        c[0x40] = 0x01; c[0x41] = 0x80; c[0x80] = 0x01; c[0x81] = 0x40
        guard case .unknown = PCIConfigParser.noSnoop(config: c) else { return XCTFail() }
    }

    /// Random config spaces (seeded, so a failure replays) against the walk
    /// written out plainly: every answer must match it, and every kind of
    /// answer must come up, so the loop cannot pass by never reaching the
    /// capability list.
    func testRandomConfigsMatchAPlainWalk() {
        var rng = SplitMix64(seed: 0xC0F1_6000)
        var seen: [String: Int] = [:]
        for _ in 0..<3000 {
            let n = Int.random(in: 0...256, using: &rng)
            var c = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if n > 0x40, Int.random(in: 0..<8, using: &rng) != 0 { c[0x06] |= 0x10 }
            if n > 0x42, Bool.random(using: &rng) {
                // Plant a capability where the pointer leads: PCIe half the time.
                let at = Int.random(in: 0x40...min(n - 2, 0xFC), using: &rng) & ~3
                c[0x34] = UInt8(at)
                if Bool.random(using: &rng) { c[at] = 0x10 }
                if Bool.random(using: &rng) { c[at + 1] = 0 }
            }
            let got = PCIConfigParser.noSnoop(config: c)
            let kind: String
            switch got {
            case .enabled: kind = "enabled"
            case .disabled: kind = "disabled"
            case .noPCIeCapability: kind = "none"
            case .unknown: kind = "unknown"
            }
            XCTAssertEqual(kind, Self.plainNoSnoopWalk(c), "config \(c)")
            XCTAssertEqual(got.isEnabled, ["enabled": true, "disabled": false, "none": false][kind])
            seen[kind, default: 0] += 1
        }
        for kind in ["enabled", "disabled", "none", "unknown"] {
            XCTAssertGreaterThan(seen[kind, default: 0], 50, "\(kind) came up only \(seen[kind, default: 0]) times: \(seen)")
        }
    }

    /// PCI 3.0 §6.7 and PCIe 4.0 §7.5.3.4 without the parser's bookkeeping:
    /// Status bit 4 (byte 6) says there is a list, 0x34 points at it, each
    /// entry is (ID, next), Device Control's bit 11 is bit 3 of byte cap + 9.
    /// Pointers are dword aligned and above the 64-byte header, so 48 hops
    /// visit every possible one; a 49th would revisit.
    static func plainNoSnoopWalk(_ c: [UInt8]) -> String {
        guard c.count >= 64 else { return "unknown" }
        guard c[6] & 0x10 != 0 else { return "none" }
        var p = Int(c[0x34] & 0xFC)
        for _ in 0..<48 {
            if p == 0 { return "none" }
            if p < 64 || p + 2 > c.count { return "unknown" }
            if c[p] == 0x10 { return p + 10 > c.count ? "unknown" : c[p + 9] & 0x08 != 0 ? "enabled" : "disabled" }
            p = Int(c[p + 1] & 0xFC)
        }
        return p == 0 ? "none" : "unknown"
    }
}

final class DeviceListingTests: XCTestCase {
    func testNoIOMMUHost() throws {
        let fs = try FakeSysfs()
        try fs.addDevice("0000:00:03.0", driver: "e1000e")
        let l = DeviceListing(discovery: SysfsDiscovery(root: fs.root))
        XCTAssertFalse(l.iommuEnabled)
        XCTAssertTrue(l.text().hasPrefix("no IOMMU groups: this host has no IOMMU enabled (intel_iommu=on / amd_iommu=on), nothing can be assigned"))
        let obj = try JSONSerialization.jsonObject(with: Data(try l.json().utf8)) as? [String: Any]
        XCTAssertEqual(obj?["iommuEnabled"] as? Bool, false)
        XCTAssertEqual(obj?["iommuGroups"] as? Int, 0)
        XCTAssertEqual(obj?["message"] as? String, DeviceListing.noIOMMUMessage)
    }

    func testJSONShape() throws {
        let fs = try FakeSysfs()
        try fs.addVTd("dmar0", ecap: 0xf0_0fde)
        try fs.addDevice("0000:00:02.0", driver: "vfio-pci", group: 5, iommu: "dmar0", cdev: "vfio0",
                         config: FakeSysfs.pcieConfig(noSnoop: true))
        try fs.addDevice("0000:00:02.1", driver: "e1000e", group: 5, iommu: "dmar0")
        let l = DeviceListing(discovery: SysfsDiscovery(root: fs.root))
        XCTAssertEqual(l.message, "2 PCI devices in 1 IOMMU group; 0 assignable now")
        let obj = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(try l.json().utf8)) as? [String: Any])
        XCTAssertEqual(Set(obj.keys), ["sysfsRoot", "iommuEnabled", "iommuGroups", "message", "devices"])
        let devs = try XCTUnwrap(obj["devices"] as? [[String: Any]])
        XCTAssertEqual(devs.count, 2)
        let d = devs[0]
        XCTAssertEqual(d["bdf"] as? String, "0000:00:02.0")
        XCTAssertEqual(d["vendorID"] as? Int, 0x8086)
        XCTAssertEqual(d["classCode"] as? Int, 0x020000)
        XCTAssertEqual(d["driver"] as? String, "vfio-pci")
        XCTAssertEqual(d["iommuGroup"] as? Int, 5)
        XCTAssertEqual(d["viable"] as? Bool, false)
        XCTAssertEqual(d["cdev"] as? String, "/dev/vfio/devices/vfio0")
        XCTAssertEqual(d["noSnoopEnabled"] as? Bool, true)
        XCTAssertEqual(d["wbinvdMustFlush"] as? Bool, false)
        let peers = try XCTUnwrap(d["groupPeers"] as? [[String: Any]])
        XCTAssertEqual(peers.first?["driver"] as? String, "e1000e")
        let iommu = try XCTUnwrap(d["iommu"] as? [String: Any])
        XCTAssertEqual(iommu["name"] as? String, "dmar0")
        XCTAssertEqual(iommu["canEnforceSnoop"] as? Bool, true)
        // Round trip.
        XCTAssertEqual(try JSONDecoder().decode(DeviceListing.self, from: Data(try l.json().utf8)), l)
        let text = l.text()
        XCTAssertTrue(text.contains("0000:00:02.0  [8086:10d3] class 020000  driver vfio-pci"), text)
        XCTAssertTrue(text.contains("also 0000:00:02.1 (e1000e)"), text)
        XCTAssertTrue(text.contains("forces snoop: yes"), text)
        XCTAssertTrue(text.contains("WBINVD stays a no-op"), text)
    }
}

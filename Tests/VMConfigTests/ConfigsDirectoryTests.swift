import Foundation
import VMConfig
import XCTest

/// Every example in configs/ must stay valid (files are not looked for: the
/// guest kernel is built by scripts/assets, not checked in).
final class ConfigsDirectoryTests: XCTestCase {
    static let configsDir: String = {
        // Tests/VMConfigTests/<this file> -> <repo>/configs
        let here = URL(fileURLWithPath: #filePath)
        return here.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("configs").path
    }()

    func testEveryConfigParses() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.configsDir)
            .filter { $0.hasSuffix(".toml") }.sorted()
        XCTAssertTrue(names.contains("smoke.toml"))
        for name in names {
            let path = Self.configsDir + "/" + name
            switch ConfigLoader.loadResult(path: path, checkFiles: false) {
            case let .success(c):
                XCTAssertEqual(c.configPath, path)
                XCTAssertTrue(c.kernelPath.hasPrefix("/"), name)
            case let .failure(e):
                XCTFail("\(name): \(e)")
            }
        }
    }

    func testSmokeConfig() throws {
        let c = try ConfigLoader.load(path: Self.configsDir + "/smoke.toml", checkFiles: false)
        let repo = (Self.configsDir as NSString).deletingLastPathComponent
        XCTAssertEqual(c.vcpus, 1)
        XCTAssertEqual(c.memoryBytes, 512 << 20)
        XCTAssertEqual(c.kernelPath, repo + "/.cache/guest/vmlinuz")
        XCTAssertEqual(c.initramfsPath, repo + "/.cache/guest/initramfs.cpio.gz")
        XCTAssertEqual(c.cmdline, "console=ttyS0 reboot=k panic=-1")
        XCTAssertEqual(c.serial, .terminal)
        XCTAssertNil(c.timeoutSeconds)
    }

    func testDiskAndNetConfig() throws {
        // checkFiles: false, since the images under .cache/images/ are made by hand (see the file).
        let c = try ConfigLoader.load(path: Self.configsDir + "/disk-and-net.toml", checkFiles: false)
        let repo = (Self.configsDir as NSString).deletingLastPathComponent
        XCTAssertEqual(c.disks, [DiskConfig(path: repo + "/.cache/images/root.img", readOnly: false),
                                 DiskConfig(path: repo + "/.cache/images/data.img", readOnly: true)])
        XCTAssertEqual(c.nets, [NetConfig(tap: "tap0", mac: [0x52, 0x54, 0x00, 0xA0, 0x00, 0x01])])
        XCTAssertEqual(c.virtioConsole, .file(repo + "/.cache/hvc0.log"))
        XCTAssertEqual(c.serial, .terminal)
        XCTAssertTrue(c.rng)
        XCTAssertTrue(c.cmdline.contains("console=hvc0"), c.cmdline)
    }

    /// Each example exists for a feature; the device example must keep
    /// every device kind in it.
    func testEveryDeviceKindHasAnExample() throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: Self.configsDir).filter { $0.hasSuffix(".toml") }
        let configs = try names.map { try ConfigLoader.load(path: Self.configsDir + "/" + $0, checkFiles: false) }
        XCTAssertTrue(configs.contains { $0.disks.contains { $0.readOnly } })
        XCTAssertTrue(configs.contains { $0.disks.contains { !$0.readOnly } })
        XCTAssertTrue(configs.contains { !$0.nets.isEmpty })
        XCTAssertTrue(configs.contains { $0.rng })
        XCTAssertTrue(configs.contains { if case .file = $0.virtioConsole { return true } else { return false } })
        XCTAssertTrue(configs.contains { $0.passthrough.contains { !$0.barAddresses.isEmpty } })
        XCTAssertTrue(configs.contains { $0.hugePages })
        XCTAssertTrue(configs.contains { $0.viommu != nil })
        XCTAssertTrue(configs.contains { $0.vfioUser.contains { $0.dma == .message } })
    }

    func testNICPassthroughConfig() throws {
        let c = try ConfigLoader.load(path: Self.configsDir + "/nic-passthrough.toml", checkFiles: false)
        XCTAssertEqual(c.passthrough, [PassthroughConfig(device: .pciAddress("0000:00:03.0"))])
        XCTAssertFalse(c.hugePages)
        // The initramfs's init reads these (firmware/initramfs/init): load the
        // driver of the assigned NIC and ping the lab host's end of the hub.
        for p in ["swiftvmm.modules=e1000e", "swiftvmm.test=net", "swiftvmm.ip=10.0.0.2/24", "swiftvmm.peer=10.0.0.1"] {
            XCTAssertTrue(c.cmdline.split(separator: " ").contains(Substring(p)), "\(p) in \(c.cmdline)")
        }
        XCTAssertEqual(c.nets, [], "the NIC is the assigned one, not virtio-net")
    }

    func testGPUPassthroughConfig() throws {
        let c = try ConfigLoader.load(path: Self.configsDir + "/gpu-passthrough.toml", checkFiles: false)
        XCTAssertTrue(c.hugePages)
        XCTAssertEqual(c.memoryBytes % (2 << 20), 0)
        XCTAssertGreaterThan(c.memoryBytes, 512 << 20)
        XCTAssertEqual(c.passthrough.first?.barAddresses, [2: 0x10_0000_0000])
        XCTAssertEqual(c.passthrough.map(\.description), ["0000:01:00.0", "0000:01:00.1"])
    }
}

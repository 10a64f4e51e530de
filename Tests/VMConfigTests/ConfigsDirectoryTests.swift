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
    }
}

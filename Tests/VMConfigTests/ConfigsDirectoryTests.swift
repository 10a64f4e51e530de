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
}

import ArgumentParser
import VMConfig
import XCTest
@testable import swiftvmm

/// The command line as users and CI jobs write it.
final class OptionParsingTests: XCTestCase {
    func testRunOptionsAndOverrides() throws {
        let r = try Run.parse(["configs/smoke.toml", "--timeout", "90s", "--expect", "login:", "--expect", "ready",
                               "--fail-on", "BUG:", "--console-log", "c.log", "--report", "r.json",
                               "--kernel", "bzImage", "--initramfs", "t.cpio", "--cmdline", "console=ttyS0 quiet",
                               "--memory", "1G", "--vcpus", "2", "--no-interactive"])
        XCTAssertEqual(r.config, "configs/smoke.toml")
        XCTAssertEqual(r.timeout, "90s")
        XCTAssertEqual(r.expect, ["login:", "ready"])
        XCTAssertEqual(r.failOn, ["BUG:"])
        XCTAssertEqual(r.consoleLog, "c.log")
        XCTAssertEqual(r.report, "r.json")
        XCTAssertEqual(r.interactive, false)
        let o = r.overrides.configOverrides
        XCTAssertEqual(o.kernel, "bzImage")
        XCTAssertEqual(o.initramfs, "t.cpio")
        XCTAssertEqual(o.cmdline, "console=ttyS0 quiet")
        XCTAssertEqual(o.memory, "1G")
        XCTAssertEqual(o.vcpus, "2")
        XCTAssertEqual(o.passthrough, [])
    }

    func testPassthroughIsRepeatableAndKeepsItsOrder() throws {
        let r = try Run.parse(["vm.toml", "--passthrough", "0000:03:00.0", "--memory", "2G",
                               "--passthrough", "/dev/vfio/devices/vfio1", "--passthrough=04:00.1"])
        let o = r.overrides.configOverrides
        XCTAssertEqual(o.passthrough, ["0000:03:00.0", "/dev/vfio/devices/vfio1", "04:00.1"])
        XCTAssertEqual(o.memory, "2G")
        XCTAssertFalse(o.isEmpty)
        XCTAssertThrowsError(try Run.parse(["vm.toml", "--passthrough"]), "a device is required")
    }

    func testPassthroughValuesAreCheckedByVMConfig() throws {
        // Parsed as given; VMConfig refuses a bad value naming --passthrough.
        let c = try Check.parse(["vm.toml", "--passthrough", "03:00.9"])
        XCTAssertEqual(c.overrides.configOverrides.passthrough, ["03:00.9"])
        let text = "[kernel]\npath = \"/k\"\n[[passthrough]]\ndevice = \"03:00.0\"\n"
        let result = ConfigLoader.parse(text, baseDirectory: "/cfg", overrides: c.overrides.configOverrides,
                                        overridesRelativeTo: "/", checkFiles: false)
        guard case let .failure(e) = result else { return XCTFail("accepted") }
        XCTAssertEqual(e.issues.map(\.description), ["--passthrough: \"03:00.9\": function 9 is out of range (0 to 7)"])
        let ok = try Run.parse(["vm.toml", "--passthrough", "3:0.1", "--passthrough", "/dev/vfio/devices/vfio0"])
        guard case let .success(cfg) = ConfigLoader.parse(text, baseDirectory: "/cfg", overrides: ok.overrides.configOverrides,
                                                          overridesRelativeTo: "/", checkFiles: false) else { return XCTFail("refused") }
        XCTAssertEqual(cfg.passthrough, [PassthroughConfig(device: .pciAddress("0000:03:00.0")),
                                         PassthroughConfig(device: .pciAddress("0000:03:00.1")),
                                         PassthroughConfig(device: .cdev("/dev/vfio/devices/vfio0"))])
    }

    func testPassthroughIsInTheHelp() {
        let help = Run.helpMessage()
        XCTAssertTrue(help.contains("--passthrough <device>"), help)
        XCTAssertTrue(help.contains("repeatable"), help)
    }

    func testDefaults() throws {
        let r = try Run.parse(["vm.toml"])
        XCTAssertNil(r.timeout)
        XCTAssertEqual(r.expect, [])
        XCTAssertNil(r.interactive, "interactive follows stdin being a terminal unless given")
        XCTAssertFalse(r.allowPvm)
        XCTAssertTrue(r.overrides.configOverrides.isEmpty)
    }

    func testCheckTakesTheSameOverrides() throws {
        let c = try Check.parse(["vm.toml", "--memory", "12Q"])
        XCTAssertEqual(c.overrides.configOverrides.memory, "12Q") // validated (and refused) by VMConfig
    }

    func testUnknownOptionAndMissingConfigAreUsageErrors() {
        XCTAssertThrowsError(try Run.parse(["vm.toml", "--frobnicate"]))
        XCTAssertThrowsError(try Run.parse([]))
        XCTAssertEqual(Run.exitCode(for: ValidationError("x")).rawValue, 64)
    }
}

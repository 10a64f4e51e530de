import ArgumentParser
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

import Foundation
import VMConfig
import XCTest

/// Checks that touch the file system: the config file itself, kernel and
/// initramfs files, the serial output file, overrides.
final class FileTests: XCTestCase {
    var tmp: TempDir!

    override func setUpWithError() throws {
        tmp = try TempDir()
    }

    override func tearDown() {
        tmp = nil
    }

    private func loadIssues(_ path: String, overrides: ConfigOverrides = ConfigOverrides()) -> [String] {
        switch ConfigLoader.loadResult(path: path, overrides: overrides, relativeTo: tmp.path) {
        case .success: return []
        case let .failure(e): return e.issues.map(\.description)
        }
    }

    // MARK: The config file

    func testLoadResolvesPathsAgainstTheConfigFile() throws {
        try tmp.file("guest/vmlinuz", "kernel")
        try tmp.file("guest/initramfs.cpio.gz", "cpio")
        let cfg = try tmp.file("configs/vm.toml", """
            [kernel]
            path = "../guest/vmlinuz"
            initramfs = "../guest/initramfs.cpio.gz"
            [serial]
            mode = "file"
            path = "../console.log"
            """)
        let c = try ConfigLoader.load(path: cfg)
        XCTAssertEqual(c.kernelPath, tmp.path + "/guest/vmlinuz")
        XCTAssertEqual(c.initramfsPath, tmp.path + "/guest/initramfs.cpio.gz")
        XCTAssertEqual(c.serial, .file(tmp.path + "/console.log"))
        XCTAssertEqual(c.configPath, cfg)
    }

    func testLoadWithARelativeConfigPath() throws {
        try tmp.file("k", "kernel")
        try tmp.file("sub/vm.toml", "[kernel]\npath = \"../k\"\n")
        let c = try ConfigLoader.load(path: "sub/vm.toml", relativeTo: tmp.path)
        XCTAssertEqual(c.configPath, tmp.path + "/sub/vm.toml")
        XCTAssertEqual(c.kernelPath, tmp.path + "/k")
    }

    func testLoadThrowsEveryIssueTyped() throws {
        let cfg = try tmp.file("vm.toml", "[machine]\nvcpus = 0\n[kernel]\npath = \"nope\"\n")
        do {
            _ = try ConfigLoader.load(path: cfg)
            XCTFail("expected an error")
        } catch {
            // `error` is a ConfigError: load uses typed throws.
            XCTAssertEqual(error.configPath, cfg)
            XCTAssertEqual(error.issues.map(\.description), [
                "machine.vcpus: 0 is out of range (1 to 254)",
                "kernel.path: \(tmp.path)/nope: no such file",
            ])
            XCTAssertTrue(error.description.hasPrefix("config \(cfg): 2 problems\n"))
        }
    }

    func testMissingConfig() {
        let p = tmp.path + "/missing.toml"
        XCTAssertEqual(loadIssues(p), ["\(p): no such file"])
        guard case let .failure(e) = ConfigLoader.loadResult(path: p) else { return XCTFail() }
        XCTAssertEqual(e.configPath, p)
    }

    func testConfigIsADirectory() throws {
        let d = try tmp.dir("vm.toml")
        XCTAssertEqual(loadIssues(d), ["\(d): is a directory, not a config file"])
    }

    func testConfigNotUTF8() throws {
        let p = tmp.path + "/bin.toml"
        try Data([0x5B, 0xFF, 0xFE, 0x5D]).write(to: URL(fileURLWithPath: p))
        XCTAssertEqual(loadIssues(p), ["\(p): not UTF-8 text"])
    }

    func testHugeConfigIsRefusedUnread() throws {
        let p = tmp.path + "/huge.toml"
        try Data(repeating: 0x23, count: (1 << 20) + 1).write(to: URL(fileURLWithPath: p)) // '#' comments
        XCTAssertEqual(loadIssues(p), ["\(p): larger than 1M, not a config file"])
        XCTAssertEqual(loadIssues("/dev/zero"), ["/dev/zero: larger than 1M, not a config file"])
    }

    func testUnreadableConfig() throws {
        try XCTSkipIf(getuid() == 0, "running as root: permission bits do not stop reads")
        let p = try tmp.file("vm.toml", kernelOnly)
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: p)
        XCTAssertEqual(loadIssues(p), ["\(p): not readable (permission denied)"])
    }

    func testSyntaxErrorInAFileNamesTheFile() throws {
        let p = try tmp.file("vm.toml", "[machine\nvcpus = 1\n")
        guard case let .failure(e) = ConfigLoader.loadResult(path: p) else { return XCTFail() }
        XCTAssertEqual(e.configPath, p)
        XCTAssertEqual(e.issues.count, 1)
        XCTAssertTrue(e.description.contains(p))
        XCTAssertTrue(e.description.contains("line 1"))
    }

    // MARK: Kernel and initramfs files

    func testKernelFileProblems() throws {
        let dir = try tmp.dir("adir")
        let empty = try tmp.file("empty", "")
        func kernel(_ p: String) -> [String] {
            issues("[kernel]\npath = \"\(p)\"\n", base: tmp.path, checkFiles: true)
        }
        XCTAssertEqual(kernel("nope"), ["kernel.path: \(tmp.path)/nope: no such file"])
        XCTAssertEqual(kernel(dir), ["kernel.path: \(dir): is a directory, not a file"])
        XCTAssertEqual(kernel(empty), ["kernel.path: \(empty): is empty"])
        XCTAssertEqual(kernel("/dev/null"), ["kernel.path: /dev/null: not a regular file"])
        try tmp.file("real", "bzImage")
        XCTAssertEqual(kernel("real"), [])
    }

    func testSymlinkedKernelIsFollowed() throws {
        let target = try tmp.file("vmlinuz-6.12", "kernel")
        try FileManager.default.createSymbolicLink(atPath: tmp.path + "/vmlinuz", withDestinationPath: target)
        try FileManager.default.createSymbolicLink(atPath: tmp.path + "/dangling", withDestinationPath: tmp.path + "/gone")
        XCTAssertEqual(issues("[kernel]\npath = \"vmlinuz\"\n", base: tmp.path, checkFiles: true), [])
        XCTAssertEqual(issues("[kernel]\npath = \"dangling\"\n", base: tmp.path, checkFiles: true),
                       ["kernel.path: \(tmp.path)/dangling: no such file"])
    }

    func testUnreadableKernel() throws {
        try XCTSkipIf(getuid() == 0, "running as root: permission bits do not stop reads")
        let p = try tmp.file("k", "kernel")
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: p)
        XCTAssertEqual(issues("[kernel]\npath = \"k\"\n", base: tmp.path, checkFiles: true),
                       ["kernel.path: \(p): not readable (permission denied)"])
    }

    func testInitramfsProblemsAndEmptyInitramfsIsAllowed() throws {
        try tmp.file("k", "kernel")
        let empty = try tmp.file("empty.cpio", "")
        XCTAssertEqual(issues("[kernel]\npath = \"k\"\ninitramfs = \"nope.cpio\"\n", base: tmp.path, checkFiles: true),
                       ["kernel.initramfs: \(tmp.path)/nope.cpio: no such file"])
        XCTAssertEqual(issues("[kernel]\npath = \"k\"\ninitramfs = \"\(empty)\"\n", base: tmp.path, checkFiles: true), [])
    }

    func testAllFileProblemsAreReportedTogether() throws {
        let found = issues("""
            [kernel]
            path = "k"
            initramfs = "i"
            [serial]
            mode = "file"
            path = "no/such/dir/console.log"
            """, base: tmp.path, checkFiles: true)
        XCTAssertEqual(found, [
            "kernel.path: \(tmp.path)/k: no such file",
            "kernel.initramfs: \(tmp.path)/i: no such file",
            "serial.path: \(tmp.path)/no/such/dir: no such directory",
        ])
    }

    func testCheckFilesFalseLooksAtNothing() {
        XCTAssertEqual(issues("[kernel]\npath = \"/no/such\"\n[serial]\nmode = \"file\"\npath = \"/no/dir/x\"\n", checkFiles: false), [])
    }

    // MARK: Serial output file

    func testSerialOutputFile() throws {
        try tmp.file("k", "kernel")
        let dir = try tmp.dir("logs")
        func serial(_ p: String) -> [String] {
            issues("[kernel]\npath = \"k\"\n[serial]\nmode = \"file\"\npath = \"\(p)\"\n", base: tmp.path, checkFiles: true)
        }
        XCTAssertEqual(serial("logs/new.log"), [], "a new file in an existing directory")
        try tmp.file("logs/old.log", "old")
        XCTAssertEqual(serial("logs/old.log"), [], "an existing file is truncated")
        XCTAssertEqual(serial("logs"), ["serial.path: \(dir): is a directory, not a file"])
        try tmp.file("afile", "x")
        XCTAssertEqual(serial("afile/console.log"), ["serial.path: \(tmp.path)/afile: no such directory"])
    }

    // MARK: Overrides

    func testOverridesReplaceKeysBeforeFilesAreChecked() throws {
        try tmp.file("other-kernel", "kernel")
        let cfg = try tmp.file("configs/vm.toml", "[kernel]\npath = \"not-built-yet\"\n")
        let o = ConfigOverrides(kernel: "other-kernel", cmdline: "console=ttyS0 quiet", memory: "1G", vcpus: "2")
        let c = try ConfigLoader.load(path: cfg, overrides: o, relativeTo: tmp.path)
        XCTAssertEqual(c.kernelPath, tmp.path + "/other-kernel", "relative to the current directory, not the config")
        XCTAssertEqual(c.cmdline, "console=ttyS0 quiet")
        XCTAssertEqual(c.memoryBytes, 1 << 30)
        XCTAssertEqual(c.vcpus, 2)
    }

    func testKernelOverrideSatisfiesRequired() throws {
        try tmp.file("k", "kernel")
        let cfg = try tmp.file("vm.toml", "[machine]\nvcpus = 2\n")
        let c = try ConfigLoader.load(path: cfg, overrides: ConfigOverrides(kernel: "k"), relativeTo: tmp.path)
        XCTAssertEqual(c.kernelPath, tmp.path + "/k")
        XCTAssertEqual(loadIssues(cfg), ["kernel.path: required"])
    }

    func testBadOverridesUseTheOptionAsKeyPath() throws {
        let cfg = try tmp.file("vm.toml", "[machine]\nvcpus = 0\n")
        let o = ConfigOverrides(kernel: "missing", initramfs: "", cmdline: String(repeating: "x", count: 3000),
                                memory: "2X", vcpus: "two")
        XCTAssertEqual(loadIssues(cfg, overrides: o), [
            "machine.vcpus: 0 is out of range (1 to 254)",
            "--vcpus: \"two\" is not an integer",
            "--memory: \"2X\" is not a size (use e.g. 512M, 2G)",
            "--initramfs: must not be empty",
            "--cmdline: is 3000 bytes long; Linux takes at most 2047 (COMMAND_LINE_SIZE)",
            "--kernel: \(tmp.path)/missing: no such file",
        ])
    }

    func testOverrideRanges() throws {
        try tmp.file("vmlinuz", "kernel")
        let cfg = try tmp.file("vm.toml", kernelOnly)
        XCTAssertEqual(loadIssues(cfg, overrides: ConfigOverrides(vcpus: "0")), ["--vcpus: 0 is out of range (1 to 254)"])
        XCTAssertEqual(loadIssues(cfg, overrides: ConfigOverrides(vcpus: "99999999999999999999")),
                       ["--vcpus: \"99999999999999999999\" is not an integer"])
        XCTAssertEqual(loadIssues(cfg, overrides: ConfigOverrides(memory: "99999999999999999999G")),
                       ["--memory: \"99999999999999999999G\" is more than the maximum 1T"])
        XCTAssertEqual(loadIssues(cfg, overrides: ConfigOverrides(kernel: "")), ["--kernel: must not be empty"])
        XCTAssertEqual(loadIssues(cfg, overrides: ConfigOverrides(memory: "1T", vcpus: "254")), [])
    }

    func testApplyingToABuiltConfig() throws {
        let k = try tmp.file("k2", "kernel")
        let base = VMConfig(kernelPath: "/boot/vmlinuz", initramfsPath: "/boot/initrd", configPath: "/etc/vm.toml")
        guard case let .success(c) = base.applying(ConfigOverrides(kernel: "k2", memory: "64M"), relativeTo: tmp.path) else {
            return XCTFail()
        }
        XCTAssertEqual(c.kernelPath, k)
        XCTAssertEqual(c.initramfsPath, "/boot/initrd", "not overridden, not checked")
        XCTAssertEqual(c.memoryBytes, 64 << 20)
        XCTAssertEqual(c.configPath, "/etc/vm.toml")
        XCTAssertEqual(try base.overriding(vcpus: "3", checkFiles: false).vcpus, 3)
        XCTAssertEqual(base.applying(ConfigOverrides()), .success(base))
        do {
            _ = try base.overriding(kernel: "nope", memory: "1", vcpus: "x", relativeTo: tmp.path)
            XCTFail("expected an error")
        } catch {
            XCTAssertEqual(error.issues.map(\.keyPath), ["--vcpus", "--memory", "--kernel"])
            XCTAssertEqual(error.configPath, "/etc/vm.toml")
        }
    }
}

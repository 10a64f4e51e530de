import Foundation
@testable import VMConfig
import XCTest

/// Disk images and console files on a real file system (`checkFiles: true`).
final class DeviceFileTests: XCTestCase {
    var tmp: TempDir!

    override func setUpWithError() throws {
        tmp = try TempDir()
        try tmp.file("vmlinuz", "kernel")
    }

    override func tearDown() {
        tmp = nil
    }

    private func check(_ devices: String) -> [String] {
        issues(kernelOnly + devices, base: tmp.path, checkFiles: true)
    }

    private func disk(_ path: String, readOnly: Bool? = nil) -> [String] {
        check("[[disk]]\npath = \"\(path)\"\n" + (readOnly.map { "read_only = \($0)\n" } ?? ""))
    }

    func testAGoodImage() throws {
        try tmp.file("root.img", "not really ext4")
        XCTAssertEqual(disk("root.img"), [])
        XCTAssertEqual(disk("root.img", readOnly: true), [])
    }

    func testImageProblems() throws {
        let dir = try tmp.dir("images")
        let empty = try tmp.file("empty.img", "")
        XCTAssertEqual(disk("disk.img"), ["disk[0].path: \(tmp.path)/disk.img: no such file"])
        XCTAssertEqual(disk("images"), ["disk[0].path: \(dir): is a directory, not a file"])
        XCTAssertEqual(disk("empty.img"), ["disk[0].path: \(empty): is empty"])
        XCTAssertEqual(disk("empty.img", readOnly: true), ["disk[0].path: \(empty): is empty"])
        XCTAssertEqual(disk("/dev/null"), ["disk[0].path: /dev/null: not a regular file"])
    }

    func testSymlinksAreFollowed() throws {
        let target = try tmp.file("images/real.img", "data")
        try FileManager.default.createSymbolicLink(atPath: tmp.path + "/link.img", withDestinationPath: target)
        try FileManager.default.createSymbolicLink(atPath: tmp.path + "/dangling.img", withDestinationPath: tmp.path + "/gone")
        XCTAssertEqual(disk("link.img"), [])
        XCTAssertEqual(disk("dangling.img"), ["disk[0].path: \(tmp.path)/dangling.img: no such file"])
    }

    func testAnImageWithoutWritePermissionNeedsReadOnly() throws {
        try XCTSkipIf(getuid() == 0, "running as root: access(W_OK) ignores mode bits (a read-only mount would still fail; see testNotWritableMessages)")
        let p = try tmp.file("ro.img", "data")
        try FileManager.default.setAttributes([.posixPermissions: 0o444], ofItemAtPath: p)
        XCTAssertEqual(disk("ro.img"),
                       ["disk[0].path: \(p): not writable (permission denied); set read_only = true to use it read-only"])
        XCTAssertEqual(disk("ro.img", readOnly: true), [])
        try FileManager.default.setAttributes([.posixPermissions: 0o000], ofItemAtPath: p)
        XCTAssertEqual(disk("ro.img", readOnly: true), ["disk[0].path: \(p): not readable (permission denied)"])
    }

    /// The message for each errno access(W_OK) gives (as root, only EROFS
    /// and EPERM for immutable files can happen, so they are checked here).
    func testNotWritableMessages() {
        XCTAssertEqual(Paths.notWritable("/x.img", errno: EROFS),
                       "/x.img: not writable (on a read-only file system); set read_only = true to use it read-only")
        XCTAssertEqual(Paths.notWritable("/x.img", errno: EACCES),
                       "/x.img: not writable (permission denied); set read_only = true to use it read-only")
        XCTAssertEqual(Paths.notWritable("/x.img", errno: EPERM),
                       "/x.img: not writable (permission denied); set read_only = true to use it read-only")
        XCTAssertEqual(Paths.notWritable("/x.img", errno: ETXTBSY),
                       "/x.img: not writable (in use as a running program); set read_only = true to use it read-only")
        XCTAssertTrue(Paths.notWritable("/x.img", errno: EIO).hasPrefix("/x.img: not writable ("))
    }

    func testTheSameImageUnderTwoNamesIsCaught() throws {
        let real = try tmp.file("images/real.img", "data")
        try FileManager.default.createSymbolicLink(atPath: tmp.path + "/sym.img", withDestinationPath: real)
        try FileManager.default.linkItem(atPath: real, toPath: tmp.path + "/hard.img")
        let shared = "same image as disk[0].path; a disk that is written must not be shared (read_only = true on both to share it)"
        XCTAssertEqual(check("[[disk]]\npath = \"images/real.img\"\n[[disk]]\npath = \"sym.img\"\n"), ["disk[1].path: " + shared])
        XCTAssertEqual(check("[[disk]]\npath = \"images/real.img\"\n[[disk]]\npath = \"hard.img\"\n"), ["disk[1].path: " + shared])
        XCTAssertEqual(check("""
            [[disk]]
            path = "sym.img"
            read_only = true
            [[disk]]
            path = "hard.img"
            read_only = true
            """), [])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"images/real.img\"\n[[disk]]\npath = \"hard.img\"\n",
                              base: tmp.path, checkFiles: false), [],
                       "without checkFiles only the written paths are compared")
    }

    func testConsoleFile() throws {
        let logs = try tmp.dir("logs")
        func console(_ p: String) -> [String] { check("[console]\nmode = \"file\"\npath = \"\(p)\"\n") }
        XCTAssertEqual(console("logs/hvc0.log"), [])
        XCTAssertEqual(console("logs"), ["console.path: \(logs): is a directory, not a file"])
        XCTAssertEqual(console("nodir/hvc0.log"), ["console.path: \(tmp.path)/nodir: no such directory"])
        let img = try tmp.file("root.img", "data")
        try FileManager.default.createSymbolicLink(atPath: tmp.path + "/log-link", withDestinationPath: img)
        XCTAssertEqual(check("[console]\nmode = \"file\"\npath = \"log-link\"\n[[disk]]\npath = \"root.img\"\n"),
                       ["console.path: same file as disk[0].path, which would be truncated"])
    }

    func testEveryFileProblemIsReportedTogether() throws {
        _ = try tmp.dir("adir")
        try tmp.file("good.img", "data")
        let found = issues("""
            [kernel]
            path = "missing-kernel"
            [console]
            mode = "file"
            path = "no/dir/hvc0.log"
            [[disk]]
            path = "good.img"
            [[disk]]
            path = "missing.img"
            read_only = true
            [[disk]]
            path = "adir"
            """, base: tmp.path, checkFiles: true)
        XCTAssertEqual(found, [
            "kernel.path: \(tmp.path)/missing-kernel: no such file",
            "console.path: \(tmp.path)/no/dir: no such directory",
            "disk[1].path: \(tmp.path)/missing.img: no such file",
            "disk[2].path: \(tmp.path)/adir: is a directory, not a file",
        ])
    }

    func testCheckFilesFalseLooksAtNoImage() {
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"/no/such.img\"\n[console]\nmode = \"file\"\npath = \"/no/dir/x\"\n",
                              checkFiles: false), [])
    }

    func testImagePathsInAFileAreRelativeToTheFileNotTheCurrentDirectory() throws {
        try tmp.file("guest/vmlinuz", "kernel")
        try tmp.file("images/root.img", "data")
        let cfg = try tmp.file("configs/vm.toml", """
            [kernel]
            path = "../guest/vmlinuz"
            [[disk]]
            path = "../images/root.img"
            [console]
            mode = "file"
            path = "hvc0.log"
            """)
        let c = try ConfigLoader.load(path: cfg, relativeTo: "/")
        XCTAssertEqual(c.disks, [DiskConfig(path: tmp.path + "/images/root.img")])
        XCTAssertEqual(c.virtioConsole, .file(tmp.path + "/configs/hvc0.log"))
    }
}

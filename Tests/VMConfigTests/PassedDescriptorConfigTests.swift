import VMConfig
import XCTest

/// "fd:N" where a device node or image goes: a descriptor a launcher opened
/// (README, "Running without root"). The config takes it as written; it is
/// checked when the VMM takes it.
final class PassedDescriptorConfigTests: XCTestCase {
    func testDiskTapAndPassthroughTakeDescriptors() throws {
        let c = try config(kernelOnly + """
            [[disk]]
            path = "fd:5"
            [[net]]
            tap = "fd:6"
            [[passthrough]]
            device = "fd:7"
            """)
        XCTAssertEqual(c.disks.map(\.path), ["fd:5"], "not made absolute against the config's directory")
        XCTAssertEqual(c.nets.map(\.tap), ["fd:6"])
        XCTAssertEqual(c.passthrough, [PassthroughConfig(device: .cdev("fd:7"))])
        guard case let .success(o) = ConfigLoader.parse(kernelOnly, baseDirectory: "/cfg", overrides: ConfigOverrides(passthrough: ["fd:9"]),
                                                        overridesRelativeTo: "/cwd", checkFiles: false) else { return XCTFail("refused") }
        XCTAssertEqual(o.passthrough, [PassthroughConfig(device: .cdev("fd:9"))], "--passthrough fd:9 is not a path either")
    }

    func testNoFileCheckForAPassedImage() {
        // With file checks on, the kernel "vmlinuz" is missing, but the disk is not a path at all.
        let found = issues(kernelOnly + "[[disk]]\npath = \"fd:5\"\n", checkFiles: true)
        XCTAssertFalse(found.contains { $0.hasPrefix("disk[0]") }, "\(found)")
        XCTAssertTrue(found.contains { $0.hasPrefix("kernel.path") }, "\(found)")
    }

    func testMalformedDescriptorsAreNamed() {
        for (table, key, value) in [("[[disk]]", "path", "fd:x"), ("[[net]]", "tap", "fd:"), ("[[passthrough]]", "device", "fd:-3"),
                                    ("[[disk]]", "path", "fd:3a"), ("[[net]]", "tap", "fd:1234567890")] {
            let found = issues(kernelOnly + "\(table)\n\(key) = \"\(value)\"\n")
            XCTAssertTrue(found.contains { $0.contains("\"\(value)\" is not a passed descriptor: write fd: and its number") },
                          "\(value): \(found)")
        }
    }

    func testStandardStreamsAreNotPassedFiles() {
        for (table, key) in [("[[disk]]", "path"), ("[[net]]", "tap"), ("[[passthrough]]", "device")] {
            for n in 0...2 {
                let found = issues(kernelOnly + "\(table)\n\(key) = \"fd:\(n)\"\n")
                XCTAssertTrue(found.contains { $0.contains("descriptors 0, 1 and 2 are the standard streams") }, "\(key) fd:\(n): \(found)")
            }
        }
    }

    func testOneWrittenDescriptorTwiceIsOneImageTwice() {
        let found = issues(kernelOnly + "[[disk]]\npath = \"fd:5\"\n[[disk]]\npath = \"fd:5\"\n")
        XCTAssertTrue(found.contains { $0.hasPrefix("disk[1].path") && $0.contains("same image as disk[0].path") }, "\(found)")
        XCTAssertTrue(issues(kernelOnly + "[[net]]\ntap = \"fd:6\"\n[[net]]\ntap = \"fd:6\"\n")
            .contains { $0.contains("duplicate of net[0].tap") })
    }
}

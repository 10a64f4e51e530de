import VMConfig
import XCTest

/// `[[passthrough]]`, `--passthrough` and `machine.hugepages`.
final class PassthroughTests: XCTestCase {
    private func device(_ value: String) -> [String] {
        issues(kernelOnly + "[[passthrough]]\ndevice = \"\(value)\"\n")
    }

    private func bars(_ table: String) -> [String] {
        issues(kernelOnly + "[[passthrough]]\ndevice = \"03:00.0\"\nbars = \(table)\n")
    }

    // MARK: Valid entries

    func testNoPassthroughAndNoHugePagesByDefault() throws {
        let c = try config(kernelOnly)
        XCTAssertEqual(c.passthrough, [])
        XCTAssertFalse(c.hugePages)
        let built = VMConfig(kernelPath: "/k")
        XCTAssertEqual(built.passthrough, [])
        XCTAssertFalse(built.hugePages)
    }

    func testEntriesInFileOrderWithNormalizedAddresses() throws {
        let c = try config(kernelOnly + """
            [[passthrough]]
            device = "0000:03:00.0"
            [[passthrough]]
            device = "3:1F.7"
            bars = { 2 = 0x1000000000, 0 = 0xF0000000 }
            [[passthrough]]
            device = "/dev/vfio/devices/vfio0"
            [[passthrough]]
            device = "ABCD:0a:1.2"
            [passthrough.bars]
            5 = 0xfffffffff000
            """)
        XCTAssertEqual(c.passthrough, [
            PassthroughConfig(device: .pciAddress("0000:03:00.0")),
            PassthroughConfig(device: .pciAddress("0000:03:1f.7"), barAddresses: [2: 0x10_0000_0000, 0: 0xF000_0000]),
            PassthroughConfig(device: .cdev("/dev/vfio/devices/vfio0")),
            PassthroughConfig(device: .pciAddress("abcd:0a:01.2"), barAddresses: [5: 0xFFFF_FFFF_F000]),
        ])
        XCTAssertEqual(c.passthrough.map(\.description),
                       ["0000:03:00.0", "0000:03:1f.7", "/dev/vfio/devices/vfio0", "abcd:0a:01.2"])
        XCTAssertEqual("\(c.passthrough[1])", "0000:03:1f.7")
    }

    func testInlineArrayOfTables() throws {
        let c = try config("passthrough = [{ device = \"00:03.0\" }, { device = \"00:04.0\", bars = { 4 = 0x2000 } }]\n" + kernelOnly)
        XCTAssertEqual(c.passthrough, [PassthroughConfig(device: .pciAddress("0000:00:03.0")),
                                       PassthroughConfig(device: .pciAddress("0000:00:04.0"), barAddresses: [4: 0x2000])])
        XCTAssertEqual(try config("passthrough = []\n" + kernelOnly).passthrough, [])
    }

    func testBARBoundaries() throws {
        let c = try config(kernelOnly + "[[passthrough]]\ndevice = \"03:00.0\"\nbars = { 0 = 0x1000, 5 = 0xFFFFFFFFFF000 }\n")
        XCTAssertEqual(c.passthrough.first?.barAddresses, [0: 0x1000, 5: (1 << 52) - 0x1000])
    }

    // MARK: device

    func testDeviceIsRequiredAndAString() {
        XCTAssertEqual(issues(kernelOnly + "[[passthrough]]\nbars = { 2 = 0x1000 }\n"),
                       ["passthrough[0].device: required (a host PCI address such as \"0000:03:00.0\" or a VFIO cdev path)"])
        XCTAssertEqual(issues(kernelOnly + "[[passthrough]]\ndevice = 3\n"),
                       ["passthrough[0].device: expected a string, got an integer"])
        XCTAssertEqual(device(""), ["passthrough[0].device: must not be empty"])
    }

    func testMalformedPCIAddresses() {
        let why = " is neither a PCI address (DDDD:BB:DD.F or BB:DD.F in hex, e.g. \"0000:03:00.0\") "
            + "nor a VFIO cdev path (e.g. \"/dev/vfio/devices/vfio0\")"
        for bad in ["03:00", "0000:03:00", "eth0", "0000:03:00.0.1", "00000:03:00.0", "0000:003:00.0",
                    "03:000.0", "03:00.00", "03:00.", ":03:00.0", "0x03:00.0", "03:00.-1", "0000:03:00:00.0",
                    "g3:00.0", " 03:00.0"] {
            XCTAssertEqual(device(bad), ["passthrough[0].device: \"\(bad)\"" + why], bad)
        }
    }

    func testDeviceAndFunctionRanges() {
        XCTAssertEqual(device("03:20.0"), ["passthrough[0].device: \"03:20.0\": device 0x20 is out of range (0 to 0x1f)"])
        XCTAssertEqual(device("0000:03:ff.0"), ["passthrough[0].device: \"0000:03:ff.0\": device 0xff is out of range (0 to 0x1f)"])
        XCTAssertEqual(device("03:00.8"), ["passthrough[0].device: \"03:00.8\": function 8 is out of range (0 to 7)"])
        XCTAssertEqual(device("03:00.f"), ["passthrough[0].device: \"03:00.f\": function 15 is out of range (0 to 7)"])
        XCTAssertEqual(device("ff:1f.7"), [])
        XCTAssertEqual(device("ffff:ff:1f.7"), [])
    }

    func testCdevPaths() {
        XCTAssertEqual(device("/dev/vfio/devices/vfio12"), [])
        XCTAssertEqual(device("dev/vfio/devices/vfio0"),
                       ["passthrough[0].device: \"dev/vfio/devices/vfio0\" is a relative path; a VFIO cdev is an "
                           + "absolute path under /dev/vfio/devices/ (e.g. \"/dev/vfio/devices/vfio0\")"])
        XCTAssertEqual(device("/dev/vfio/12"),
                       ["passthrough[0].device: \"/dev/vfio/12\" is not under /dev/vfio/devices/; a VFIO cdev is e.g. "
                           + "\"/dev/vfio/devices/vfio0\" (/dev/vfio/N is a legacy VFIO group; swiftvmm opens the "
                           + "device's cdev, listed by `swiftvmm devices`)"])
        XCTAssertEqual(device("/dev/sda"),
                       ["passthrough[0].device: \"/dev/sda\" is not under /dev/vfio/devices/; a VFIO cdev is e.g. "
                           + "\"/dev/vfio/devices/vfio0\""])
        for bad in ["/dev/vfio/devices/", "/dev/vfio/devices/..", "/dev/vfio/devices/.", "/dev/vfio/devices/a/b",
                    "/dev/vfio/devices/../../sda"] {
            XCTAssertEqual(device(bad), ["passthrough[0].device: \"\(bad)\" does not name a file directly in "
                + "/dev/vfio/devices/ (e.g. \"/dev/vfio/devices/vfio0\")"], bad)
        }
    }

    func testTheSameDeviceTwiceIsRefused() {
        XCTAssertEqual(issues(kernelOnly + """
            [[passthrough]]
            device = "0000:03:00.0"
            [[passthrough]]
            device = "03:00.1"
            [[passthrough]]
            device = "03:00.0"
            [[passthrough]]
            device = "/dev/vfio/devices/vfio0"
            [[passthrough]]
            device = "/dev/vfio/devices/vfio0"
            bars = { 2 = 0x1000 }
            [[passthrough]]
            device = "0000:03:00.0"
            """), [
            "passthrough[2].device: 0000:03:00.0 is a duplicate of passthrough[0].device",
            "passthrough[4].device: /dev/vfio/devices/vfio0 is a duplicate of passthrough[3].device",
            "passthrough[5].device: 0000:03:00.0 is a duplicate of passthrough[0].device",
        ])
        XCTAssertEqual(issues(kernelOnly + "[[passthrough]]\ndevice = \"0000:0A:00.0\"\n[[passthrough]]\ndevice = \"0a:00.0\"\n"),
                       ["passthrough[1].device: 0000:0a:00.0 is a duplicate of passthrough[0].device"], "hex case")
    }

    // MARK: bars

    func testBARIndices() {
        let why = " is not a BAR index (0 to 5)"
        XCTAssertEqual(bars("{ 6 = 0x1000 }"), ["passthrough[0].bars.6: \"6\"" + why])
        XCTAssertEqual(bars("{ 02 = 0x1000 }"), ["passthrough[0].bars.02: \"02\"" + why])
        XCTAssertEqual(bars("{ -1 = 0x1000 }"), ["passthrough[0].bars.-1: \"-1\"" + why])
        XCTAssertEqual(bars("{ bar2 = 0x1000 }"), ["passthrough[0].bars.bar2: \"bar2\"" + why])
        XCTAssertEqual(bars("{ \"2 \" = 0x1000 }"), ["passthrough[0].bars.\"2 \": \"2 \"" + why])
        XCTAssertEqual(bars("{ 0 = 0x1000, 1 = 0x2000, 2 = 0x3000, 3 = 0x4000, 4 = 0x5000, 5 = 0x6000 }"), [])
    }

    func testBARAddresses() {
        XCTAssertEqual(bars("{ 2 = 0 }"), ["passthrough[0].bars.2: 0x0 is not a guest-physical address above 0"])
        XCTAssertEqual(bars("{ 2 = -4096 }"), ["passthrough[0].bars.2: -4096 is not a guest-physical address above 0"])
        XCTAssertEqual(bars("{ 2 = 0x1000000800 }"),
                       ["passthrough[0].bars.2: 0x1000000800 is not 4K aligned (BARs are mapped in 4 KiB pages)"])
        XCTAssertEqual(bars("{ 2 = 0x10000000000000 }"),
                       ["passthrough[0].bars.2: 0x10000000000000 is not below 0x10000000000000 (2^52, the x86-64 physical address limit)"])
        XCTAssertEqual(bars("{ 2 = 0x7ffffffffffff000 }"),
                       ["passthrough[0].bars.2: 0x7ffffffffffff000 is not below 0x10000000000000 (2^52, the x86-64 physical address limit)"])
        XCTAssertEqual(bars("{ 2 = \"0x1000\" }"),
                       ["passthrough[0].bars.2: expected an integer address (e.g. 0x1000000000), got a string"])
        XCTAssertEqual(bars("{ 2 = 4096.0 }"),
                       ["passthrough[0].bars.2: expected an integer address (e.g. 0x1000000000), got a float"])
    }

    func testBarsMustBeATable() {
        let why = "expected a table of BAR index = guest address (e.g. bars = { 2 = 0x1000000000 }), got "
        XCTAssertEqual(bars("0x1000000000"), ["passthrough[0].bars: " + why + "an integer"])
        XCTAssertEqual(bars("[0x1000000000]"), ["passthrough[0].bars: " + why + "an array"])
    }

    func testEveryBARProblemIsReportedAndTheEntryDropped() {
        XCTAssertEqual(bars("{ 7 = 0x1001, 1 = 0 }"), [
            "passthrough[0].bars.1: 0x0 is not a guest-physical address above 0",
            "passthrough[0].bars.7: \"7\" is not a BAR index (0 to 5)",
            "passthrough[0].bars.7: 0x1001 is not 4K aligned (BARs are mapped in 4 KiB pages)",
        ])
    }

    // MARK: Shape, unknown keys, every issue at once

    func testPassthroughMustBeAnArrayOfTables() {
        XCTAssertEqual(issues(kernelOnly + "[passthrough]\ndevice = \"03:00.0\"\n"),
                       ["passthrough: expected an array of tables ([[passthrough]])"])
        XCTAssertEqual(issues("passthrough = [\"03:00.0\"]\n" + kernelOnly),
                       ["passthrough[0]: expected a table, got a string"])
    }

    func testUnknownKeys() {
        XCTAssertEqual(issues(kernelOnly + "[[passthrough]]\ndevice = \"03:00.0\"\nbar = { 2 = 0x1000 }\n"),
                       ["passthrough[0].bar: unknown key (did you mean bars?)"])
        XCTAssertEqual(issues(kernelOnly + "[[passthrough]]\ndevice = \"03:00.0\"\nrom = false\n"),
                       ["passthrough[0].rom: unknown key"])
        XCTAssertEqual(issues(kernelOnly + "[[passthrough]]\ndevise = \"03:00.0\"\n"), [
            "passthrough[0].device: required (a host PCI address such as \"0000:03:00.0\" or a VFIO cdev path)",
            "passthrough[0].devise: unknown key (did you mean device?)",
        ])
        XCTAssertEqual(issues(kernelOnly + "[[passthru]]\ndevice = \"03:00.0\"\n"), ["passthru: unknown table"])
        XCTAssertEqual(issues("device = \"03:00.0\"\n" + kernelOnly),
                       ["device: unknown key (did you mean device in [[passthrough]]?)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nhugepage = true\n"),
                       ["machine.hugepage: unknown key (did you mean hugepages?)"])
    }

    func testEveryProblemAtOnce() {
        XCTAssertEqual(issues(kernelOnly + """
            [[passthrough]]
            device = "03:00.8"
            bars = { 9 = 0x1000 }
            [[passthrough]]
            device = "/dev/vfio/1"
            [[passthrough]]
            bars = 3
            extra = 1
            [[passthrough]]
            device = "0000:04:00.0"
            [[passthrough]]
            device = "04:00.0"
            """), [
            "passthrough[0].device: \"03:00.8\": function 8 is out of range (0 to 7)",
            "passthrough[0].bars.9: \"9\" is not a BAR index (0 to 5)",
            "passthrough[1].device: \"/dev/vfio/1\" is not under /dev/vfio/devices/; a VFIO cdev is e.g. "
                + "\"/dev/vfio/devices/vfio0\" (/dev/vfio/N is a legacy VFIO group; swiftvmm opens the device's cdev, "
                + "listed by `swiftvmm devices`)",
            "passthrough[2].device: required (a host PCI address such as \"0000:03:00.0\" or a VFIO cdev path)",
            "passthrough[2].bars: expected a table of BAR index = guest address (e.g. bars = { 2 = 0x1000000000 }), got an integer",
            "passthrough[2].extra: unknown key",
            "passthrough[4].device: 0000:04:00.0 is a duplicate of passthrough[3].device",
        ])
    }

    // MARK: PCI slots

    func testPassthroughDevicesTakePCISlots() {
        let disks = String(repeating: "[[disk]]\npath = \"d.img\"\nread_only = true\n", count: 29)
        let two = "[[passthrough]]\ndevice = \"03:00.0\"\n[[passthrough]]\ndevice = \"04:00.0\"\n"
        XCTAssertEqual(issues(kernelOnly + disks + two), [])
        XCTAssertEqual(issues(kernelOnly + disks + "[rng]\nenabled = true\n" + two),
                       ["passthrough[1]: no PCI slot left: 29 disks, the rng and 2 passthrough devices need 32 slots, and PCI bus 0 has 31"])
        XCTAssertEqual(parseWithOverrides(kernelOnly + disks + two, ConfigOverrides(passthrough: ["05:00.0"])),
                       ["--passthrough: no PCI slot left: 29 disks and 3 passthrough devices need 32 slots, and PCI bus 0 has 31"])
    }

    // MARK: --passthrough

    private func parseWithOverrides(_ text: String, _ o: ConfigOverrides) -> [String] {
        switch ConfigLoader.parse(text, baseDirectory: "/cfg", overrides: o, overridesRelativeTo: "/cwd", checkFiles: false) {
        case .success: return []
        case let .failure(e): return e.issues.map(\.description)
        }
    }

    func testPassthroughOverridesAppend() throws {
        let text = kernelOnly + "[[passthrough]]\ndevice = \"03:00.0\"\nbars = { 2 = 0x1000000000 }\n"
        guard case let .success(c) = ConfigLoader.parse(
            text, baseDirectory: "/cfg", overrides: ConfigOverrides(passthrough: ["0000:00:03.0", "/dev/vfio/devices/vfio3"]),
            overridesRelativeTo: "/cwd", checkFiles: false) else { return XCTFail("refused") }
        XCTAssertEqual(c.passthrough, [
            PassthroughConfig(device: .pciAddress("0000:03:00.0"), barAddresses: [2: 0x10_0000_0000]),
            PassthroughConfig(device: .pciAddress("0000:00:03.0")),
            PassthroughConfig(device: .cdev("/dev/vfio/devices/vfio3")),
        ])
        XCTAssertFalse(ConfigOverrides(passthrough: ["03:00.0"]).isEmpty)
        XCTAssertTrue(ConfigOverrides(passthrough: []).isEmpty)
    }

    func testPassthroughOverrideErrorsNameTheOption() {
        let text = kernelOnly + "[[passthrough]]\ndevice = \"03:00.0\"\n"
        XCTAssertEqual(parseWithOverrides(text, ConfigOverrides(passthrough: ["0000:03:00.0", "3:0.0", "03:00.9", "x", "00:03.0", "0:3.0"])), [
            "--passthrough: 0000:03:00.0 is a duplicate of passthrough[0].device",
            "--passthrough: 0000:03:00.0 is a duplicate of passthrough[0].device",
            "--passthrough: \"03:00.9\": function 9 is out of range (0 to 7)",
            "--passthrough: \"x\" is neither a PCI address (DDDD:BB:DD.F or BB:DD.F in hex, e.g. \"0000:03:00.0\") "
                + "nor a VFIO cdev path (e.g. \"/dev/vfio/devices/vfio0\")",
            "--passthrough: 0000:00:03.0 is given twice",
        ])
        XCTAssertEqual(parseWithOverrides(kernelOnly, ConfigOverrides(passthrough: ["/dev/vfio/3"])).first?.hasPrefix(
            "--passthrough: \"/dev/vfio/3\" is not under /dev/vfio/devices/"), true)
        XCTAssertEqual(parseWithOverrides(kernelOnly, ConfigOverrides(passthrough: [""])), ["--passthrough: must not be empty"])
    }

    func testPassthroughOnALoadedConfig() throws {
        let c = try config(kernelOnly + "[[passthrough]]\ndevice = \"03:00.0\"\n[[disk]]\npath = \"a.img\"\n")
        let o = try c.overriding(passthrough: ["04:00.0"], checkFiles: false)
        XCTAssertEqual(o.passthrough.map(\.description), ["0000:03:00.0", "0000:04:00.0"])
        XCTAssertEqual(o.disks, c.disks)
        XCTAssertEqual(try c.overriding(memory: "1G", checkFiles: false).passthrough, c.passthrough, "kept without --passthrough")
        XCTAssertThrowsError(try c.overriding(passthrough: ["0000:03:00.0"], checkFiles: false)) { e in
            XCTAssertEqual((e as? ConfigError)?.issues.map(\.description),
                           ["--passthrough: 0000:03:00.0 is a duplicate of passthrough[0].device"])
        }
        let full = try config(kernelOnly + String(repeating: "[[disk]]\npath = \"d.img\"\nread_only = true\n", count: 31))
        XCTAssertThrowsError(try full.overriding(passthrough: ["04:00.0"], checkFiles: false)) { e in
            XCTAssertEqual((e as? ConfigError)?.issues.map(\.description),
                           ["--passthrough: no PCI slot left: 31 disks and 1 passthrough device need 32 slots, and PCI bus 0 has 31"])
        }
    }

    // MARK: machine.hugepages

    func testHugePages() throws {
        XCTAssertTrue(try config(kernelOnly + "[machine]\nhugepages = true\nmemory = \"2G\"\n").hugePages)
        XCTAssertFalse(try config(kernelOnly + "[machine]\nhugepages = false\nmemory = \"513M\"\n").hugePages)
        XCTAssertEqual(issues(kernelOnly + "[machine]\nhugepages = \"yes\"\n"),
                       ["machine.hugepages: expected a boolean, got a string"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nhugepages = true\nmemory = \"513M\"\n"),
                       ["machine.memory: 513M is not a multiple of 2M, which machine.hugepages = true needs (2 MiB pages)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nhugepages = true\nmemory = \"12Q\"\n"),
                       ["machine.memory: \"12Q\" is not a size (use e.g. 512M, 2G)"], "one problem, not two")
    }

    func testHugePagesWithMemoryOverride() throws {
        let text = kernelOnly + "[machine]\nhugepages = true\n"
        XCTAssertEqual(parseWithOverrides(text, ConfigOverrides(memory: "1025M")),
                       ["--memory: 1025M is not a multiple of 2M, which machine.hugepages = true needs (2 MiB pages)"])
        XCTAssertEqual(parseWithOverrides(text, ConfigOverrides(memory: "1026M")), [])
        let c = try config(text)
        XCTAssertEqual(c.memoryBytes, 512 << 20)
        XCTAssertThrowsError(try c.overriding(memory: "3M", checkFiles: false)) { e in
            XCTAssertEqual((e as? ConfigError)?.issues.map(\.description), ["--memory: \"3M\" is less than the minimum 16M"])
        }
        XCTAssertThrowsError(try c.overriding(memory: "17M", checkFiles: false)) { e in
            XCTAssertEqual((e as? ConfigError)?.issues.map(\.description),
                           ["--memory: 17M is not a multiple of 2M, which machine.hugepages = true needs (2 MiB pages)"])
        }
        XCTAssertEqual(try c.overriding(memory: "18M", checkFiles: false).hugePages, true)
    }
}

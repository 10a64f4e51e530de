import VMConfig
import XCTest

/// `[[disk]]`, `[[net]]`, `[console]` and `[rng]` without touching files
/// (`DeviceFileTests` checks the disk images themselves).
final class DeviceTests: XCTestCase {
    // MARK: Defaults and a full config

    func testNoDevicesByDefault() throws {
        let c = try config(kernelOnly)
        XCTAssertEqual(c.disks, [])
        XCTAssertEqual(c.nets, [])
        XCTAssertEqual(c.virtioConsole, .off)
        XCTAssertFalse(c.rng)
        let built = VMConfig(kernelPath: "/k")
        XCTAssertEqual(built.disks, [])
        XCTAssertEqual(built.nets, [])
        XCTAssertEqual(built.virtioConsole, .off)
        XCTAssertFalse(built.rng)
    }

    func testEveryDeviceKey() throws {
        let c = try config(kernelOnly + """
            [[disk]]
            path = "root.img"
            [[disk]]
            path = "/images/data.img"
            read_only = true
            [[disk]]
            path = "scratch.img"
            read_only = false
            cache = "none"
            queues = 4
            aio = "sync"
            [[net]]
            tap = "tap0"
            [[net]]
            tap = "vm1.eth-1_x"
            mac = "02:00:00:AB:cd:Ef"
            vhost = false
            [console]
            mode = "file"
            path = "logs/hvc0.log"
            [rng]
            enabled = true
            """)
        XCTAssertEqual(c.disks, [DiskConfig(path: "/cfg/root.img", readOnly: false),
                                 DiskConfig(path: "/images/data.img", readOnly: true),
                                 DiskConfig(path: "/cfg/scratch.img", cache: .none, queues: 4, aio: .sync)])
        XCTAssertEqual(c.disks.map(\.cache), [.writeback, .writeback, .none], "writeback by default")
        XCTAssertEqual(c.disks.map(\.aio), [.ioUring, .ioUring, .sync], "io_uring by default")
        XCTAssertEqual(c.disks.map { $0.queueCount(vcpus: 3) }, [3, 3, 4], "one queue per vCPU by default")
        XCTAssertEqual(DiskConfig(path: "/a").queueCount(vcpus: 200), 64, "at most 64")
        XCTAssertEqual(c.nets, [NetConfig(tap: "tap0", mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
                                NetConfig(tap: "vm1.eth-1_x", mac: [0x02, 0x00, 0x00, 0xAB, 0xCD, 0xEF], vhost: false)])
        XCTAssertEqual(c.nets.map(\.vhost), [true, false], "vhost-net by default")
        XCTAssertEqual(c.nets.map { $0.queuePairs(vcpus: 4) }, [4, 4], "one queue pair per vCPU by default")
        XCTAssertEqual(NetConfig(tap: "t", mac: [2, 0, 0, 0, 0, 1], queues: 2).queuePairs(vcpus: 8), 2)
        XCTAssertEqual(NetConfig(tap: "t", mac: [2, 0, 0, 0, 0, 1]).queuePairs(vcpus: 64), 16, "at most 16")
        XCTAssertEqual(c.nets.map(\.macString), ["52:54:00:12:34:56", "02:00:00:ab:cd:ef"])
        XCTAssertEqual(c.virtioConsole, .file("/cfg/logs/hvc0.log"))
        XCTAssertTrue(c.rng)
    }

    func testInlineArraysOfTablesAreTheSameAsDoubleBrackets() throws {
        let c = try config("""
            disk = [{ path = "a.img" }, { path = "b.img", read_only = true }]
            net = [{ tap = "tap0" }]
            console = { mode = "terminal" }
            rng.enabled = true

            """ + kernelOnly)
        XCTAssertEqual(c.disks, [DiskConfig(path: "/cfg/a.img"), DiskConfig(path: "/cfg/b.img", readOnly: true)])
        XCTAssertEqual(c.nets.map(\.tap), ["tap0"])
        XCTAssertEqual(c.virtioConsole, .terminal)
        XCTAssertTrue(c.rng)
        XCTAssertEqual(try config("disk = []\nnet = []\n" + kernelOnly).disks, [], "empty arrays: no devices")
    }

    func testDiskPathsAreRelativeToTheConfigDirectory() throws {
        let c = try config(kernelOnly + """
            [[disk]]
            path = "../.cache/images/root.img"
            [[disk]]
            path = "./a/../b//data.img"
            [console]
            mode = "file"
            path = "../.cache/hvc0.log"
            """, base: "/work/main/configs")
        XCTAssertEqual(c.disks.map(\.path), ["/work/main/.cache/images/root.img", "/work/main/configs/b/data.img"])
        XCTAssertEqual(c.virtioConsole, .file("/work/main/.cache/hvc0.log"))
    }

    // MARK: [[disk]]

    func testDiskErrors() {
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\nread_only = true\n"), ["disk[0].path: required"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"\"\n"), ["disk[0].path: must not be empty"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = 3\n"), ["disk[0].path: expected a string, got an integer"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\n[[disk]]\npath = \"b\"\nread_only = \"yes\"\n"),
                       ["disk[1].read_only: expected a boolean, got a string"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\nread_only = 0\n"),
                       ["disk[0].read_only: expected a boolean, got an integer"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\nsize = \"1G\"\n"), ["disk[0].size: unknown key"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\n[[disk]]\npath = \"b\"\ncache = \"directsync\"\n"),
                       ["disk[1].cache: \"directsync\" is not one of writeback, none"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\naio = \"native\"\nqueues = 0\n"),
                       ["disk[0].aio: \"native\" is not one of io_uring, sync", "disk[0].queues: 0 is out of range (1 to 64)"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\naio = 1\nqueues = \"4\"\n"),
                       ["disk[0].aio: expected a string, got an integer", "disk[0].queues: expected an integer, got a string"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\nqueues = 65\n"),
                       ["disk[0].queues: 65 is out of range (1 to 64)"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\ncache = false\n"),
                       ["disk[0].cache: expected a string, got a boolean"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\nreadonly = true\n"),
                       ["disk[0].readonly: unknown key (did you mean read_only?)"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\ntap = \"tap0\"\n"),
                       ["disk[0].tap: unknown key (did you mean tap in [[net]]?)"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a\"\n\"my key\" = 1\n"), ["disk[0].\"my key\": unknown key"])
    }

    func testDiskMustBeAnArrayOfTables() {
        XCTAssertEqual(issues(kernelOnly + "[disk]\npath = \"a\"\n"), ["disk: expected an array of tables ([[disk]])"])
        XCTAssertEqual(issues("disk = \"a.img\"\n" + kernelOnly), ["disk: expected an array of tables ([[disk]])"])
        XCTAssertEqual(issues("disk = [\"a.img\", { path = \"b.img\" }, 3]\n" + kernelOnly),
                       ["disk[0]: expected a table, got a string", "disk[2]: expected a table, got an integer"])
        XCTAssertEqual(issues(kernelOnly + "[net]\ntap = \"tap0\"\n"), ["net: expected an array of tables ([[net]])"])
    }

    func testAWritableDiskImageUsedTwiceIsRefused() throws {
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a.img\"\n[[disk]]\npath = \"./x/../a.img\"\n"),
                       ["disk[1].path: same image as disk[0].path; a disk that is written must not be shared "
                        + "(read_only = true on both to share it)"])
        XCTAssertEqual(issues(kernelOnly + "[[disk]]\npath = \"a.img\"\nread_only = true\n[[disk]]\npath = \"a.img\"\n").count, 1)
        let shared = try config(kernelOnly + "[[disk]]\npath = \"a.img\"\nread_only = true\n[[disk]]\npath = \"a.img\"\nread_only = true\n")
        XCTAssertEqual(shared.disks.count, 2, "two read-only views of one image are fine")
    }

    // MARK: [[net]]

    func testNetErrors() {
        XCTAssertEqual(issues(kernelOnly + "[[net]]\nmac = \"52:54:00:12:34:56\"\n"), ["net[0].tap: required"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = 0\n"), ["net[0].tap: expected a string, got an integer"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\nmac = 0x525400123456\n"),
                       ["net[0].mac: expected a string, got an integer"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"t0\"\nvhost = \"on\"\n"),
                       ["net[0].vhost: expected a boolean, got a string"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"t0\"\nqueues = 17\n"),
                       ["net[0].queues: 17 is out of range (1 to 16)"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\nmac = \"01:00:5e:00:00:01\"\n"),
                       ["net[0].mac: \"01:00:5e:00:00:01\" is a multicast address"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\nmac = \"FF:FF:FF:FF:FF:FF\"\n"),
                       ["net[0].mac: \"FF:FF:FF:FF:FF:FF\" is a multicast address"], "broadcast is a group address")
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\nmac = \"00:00:00:00:00:00\"\n"),
                       ["net[0].mac: \"00:00:00:00:00:00\" is the all-zero address"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\nmac = \"52-54-00-12-34-56\"\n"),
                       ["net[0].mac: \"52-54-00-12-34-56\" is not a MAC address (six hex pairs separated by colons, "
                        + "e.g. \"52:54:00:12:34:56\")"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\nmodel = \"e1000\"\n"), ["net[0].model: unknown key"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\nmack = \"52:54:00:12:34:56\"\n"),
                       ["net[0].mack: unknown key (did you mean mac?)"])
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\npath = \"x\"\n"), ["net[0].path: unknown key"],
                       "no kernel.path suggestion from inside a [[net]]")
    }

    func testTapNames() {
        func tap(_ name: String) -> [String] { issues(kernelOnly + "[[net]]\ntap = \(name)\n") }
        XCTAssertEqual(tap("\"t\""), [])
        XCTAssertEqual(tap("\"tap.vm-1_A\""), [])
        XCTAssertEqual(tap("\"" + String(repeating: "x", count: 15) + "\""), [], "15 bytes + NUL = IFNAMSIZ")
        XCTAssertEqual(tap("\"" + String(repeating: "x", count: 16) + "\""),
                       ["net[0].tap: \"xxxxxxxxxxxxxxxx\" is 16 characters long; interface names have at most 15 (IFNAMSIZ is 16 with the NUL)"])
        XCTAssertEqual(tap("\"\""), ["net[0].tap: must not be empty"])
        XCTAssertEqual(tap("\"tap 0\""), ["net[0].tap: \"tap 0\" contains \" \"; interface names use only A-Z, a-z, 0-9, _, . and -"])
        XCTAssertEqual(tap("\"tap%d\""), ["net[0].tap: \"tap%d\" contains \"%\"; interface names use only A-Z, a-z, 0-9, _, . and -"])
        XCTAssertEqual(tap("\"br0:1\""), ["net[0].tap: \"br0:1\" contains \":\"; interface names use only A-Z, a-z, 0-9, _, . and -"])
        XCTAssertEqual(tap("\"a/b\""), ["net[0].tap: \"a/b\" contains \"/\"; interface names use only A-Z, a-z, 0-9, _, . and -"])
        XCTAssertEqual(tap("\"tap\\t\""), ["net[0].tap: \"tap\\t\" contains \"\\t\"; interface names use only A-Z, a-z, 0-9, _, . and -"])
        XCTAssertEqual(tap("\"tapé\""), ["net[0].tap: \"tapé\" contains \"é\"; interface names use only A-Z, a-z, 0-9, _, . and -"])
        XCTAssertEqual(tap("\".\""), ["net[0].tap: \".\" is not a valid interface name"])
        XCTAssertEqual(tap("\"..\""), ["net[0].tap: \"..\" is not a valid interface name"])
        XCTAssertEqual(tap("\"...\""), [])
    }

    func testDuplicateTapsAndMACsAreRefused() {
        XCTAssertEqual(issues(kernelOnly + """
            [[net]]
            tap = "tap0"
            mac = "52:54:00:aa:bb:cc"
            [[net]]
            tap = "tap1"
            mac = "52:54:00:AA:BB:CC"
            """), ["net[1].mac: duplicate of net[0].mac"], "compared as bytes, not as text")
        XCTAssertEqual(issues(kernelOnly + "[[net]]\ntap = \"tap0\"\n[[net]]\ntap = \"tap0\"\n"),
                       ["net[1].tap: duplicate of net[0].tap"])
        XCTAssertEqual(issues(kernelOnly + """
            [[net]]
            tap = "tap0"
            [[net]]
            tap = "tap1"
            mac = "52:54:00:12:34:56"
            """), ["net[1].mac: 52:54:00:12:34:56 is the default MAC of net[0] (set net[0].mac to use it here)"])
        XCTAssertEqual(issues(kernelOnly + """
            [[net]]
            tap = "tap0"
            mac = "52:54:00:12:34:57"
            [[net]]
            tap = "tap1"
            """), ["net[1].mac: the default 52:54:00:12:34:57 is a duplicate of net[0].mac; set this one"])
        XCTAssertEqual(issues(kernelOnly + """
            [[net]]
            tap = "tap0"
            mac = "01:00:5e:00:00:01"
            [[net]]
            tap = "tap1"
            mac = "01:00:5e:00:00:01"
            """), ["net[0].mac: \"01:00:5e:00:00:01\" is a multicast address",
                   "net[1].mac: \"01:00:5e:00:00:01\" is a multicast address"], "a refused MAC is not a duplicate")
    }

    func testDefaultMACs() throws {
        let c = try config(kernelOnly + "[[net]]\ntap = \"a\"\n[[net]]\ntap = \"b\"\nmac = \"02:00:00:00:00:01\"\n[[net]]\ntap = \"c\"\n")
        XCTAssertEqual(c.nets.map(\.macString), ["52:54:00:12:34:56", "02:00:00:00:00:01", "52:54:00:12:34:58"],
                       "derived from the index in the file, whether or not earlier entries set mac")
        XCTAssertEqual(NetConfig.defaultMAC(index: 0), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        XCTAssertEqual(NetConfig.defaultMAC(index: 1), [0x52, 0x54, 0x00, 0x12, 0x34, 0x57])
        XCTAssertEqual(NetConfig.defaultMAC(index: 0xAA), [0x52, 0x54, 0x00, 0x12, 0x35, 0x00], "carries")
        XCTAssertEqual(NetConfig.defaultMAC(index: 0xED_CBA9), [0x52, 0x54, 0x00, 0xFF, 0xFF, 0xFF])
        XCTAssertEqual(NetConfig.defaultMAC(index: 0xED_CBAA), [0x52, 0x54, 0x00, 0x00, 0x00, 0x00], "wraps in 24 bits")
        XCTAssertEqual(NetConfig.defaultMAC(index: -1), [0x52, 0x54, 0x00, 0x12, 0x34, 0x55], "no trap")
        XCTAssertEqual(NetConfig.defaultMAC(index: .max).count, 6)
        var seen = Set<[UInt8]>()
        for i in 0..<4096 {
            let m = NetConfig.defaultMAC(index: i)
            XCTAssertEqual(m[0] & 0x01, 0, "unicast")
            XCTAssertEqual(m[0] & 0x02, 0x02, "locally administered")
            XCTAssertEqual(Array(m[0..<3]), [0x52, 0x54, 0x00])
            XCTAssertTrue(seen.insert(m).inserted, "distinct")
        }
    }

    func testMACParsing() {
        XCTAssertEqual(NetConfig.parseMAC("52:54:00:12:34:56"), [0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        XCTAssertEqual(NetConfig.parseMAC("AA:BB:CC:DD:EE:FF"), [0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF])
        XCTAssertEqual(NetConfig.parseMAC("aa:bb:cc:dd:ee:ff"), [0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF])
        XCTAssertEqual(NetConfig.parseMAC("aA:Bb:0c:D0:e9:F1"), [0xAA, 0xBB, 0x0C, 0xD0, 0xE9, 0xF1])
        XCTAssertEqual(NetConfig.parseMAC("01:00:5e:00:00:01"), [0x01, 0x00, 0x5E, 0x00, 0x00, 0x01], "parses; judged later")
        XCTAssertEqual(NetConfig(tap: "t", mac: [0xAA, 0xBB, 0x0C, 0xD0, 0xE9, 0xF1]).macString, "aa:bb:0c:d0:e9:f1")
        let bad = [
            "", ":", "::", ":::::", "52::00:12:34:56", ":52:54:00:12:34:56", "52:54:00:12:34:56:",
            "52:54:00:12:34", "52:54:00:12:34:56:78", "52:54:00:12:34:56:78:9a",   // 5, 7 and 8 groups
            "52:54:00:12:34:5", "52:54:00:12:34:567", "5:54:00:12:34:56", "052:54:00:12:34:56",
            "52:54:00:12:34:5g", "zz:54:00:12:34:56", "52:54:00:12:34:+5", "52:54:00:12:34:-5", "+5:54:00:12:34:56",
            "0x:54:00:12:34:56", " 52:54:00:12:34:56", "52:54:00:12:34:56 ", "52:54:00:12 :34:56",
            "52-54-00-12-34-56", "5254.0012.3456", "525400123456", "52:54:00:12:34:56\n",
            "５２:54:00:12:34:56", "52:54:00:12:34:٥٦", "52:54:00:12:34:é",
        ]
        for s in bad {
            XCTAssertNil(NetConfig.parseMAC(s), s)
        }
    }

    func testMACParsingErrorsInAConfig() {
        func mac(_ m: String) -> [String] { issues(kernelOnly + "[[net]]\ntap = \"tap0\"\nmac = \"\(m)\"\n") }
        let hint = " is not a MAC address (six hex pairs separated by colons, e.g. \"52:54:00:12:34:56\")"
        XCTAssertEqual(mac("::"), ["net[0].mac: \"::\"" + hint])
        XCTAssertEqual(mac("52:54:00:12:34:56:78"), ["net[0].mac: \"52:54:00:12:34:56:78\"" + hint])
        XCTAssertEqual(mac("52:54:00:12:34"), ["net[0].mac: \"52:54:00:12:34\"" + hint])
        XCTAssertEqual(mac("52:54:00:12:34:xy"), ["net[0].mac: \"52:54:00:12:34:xy\"" + hint])
        XCTAssertEqual(mac(""), ["net[0].mac: \"\"" + hint])
        XCTAssertEqual(mac("52:54:00:AB:CD:EF"), [])
    }

    // MARK: [console]

    func testConsoleModes() throws {
        XCTAssertEqual(try config(kernelOnly + "[console]\n").virtioConsole, .off)
        XCTAssertEqual(try config(kernelOnly + "[console]\nmode = \"off\"\n").virtioConsole, .off)
        XCTAssertEqual(try config(kernelOnly + "[console]\nmode = \"terminal\"\n").virtioConsole, .terminal)
        XCTAssertEqual(try config(kernelOnly + "[console]\nmode = \"file\"\npath = \"/var/log/hvc0\"\n").virtioConsole,
                       .file("/var/log/hvc0"))
        XCTAssertEqual(issues(kernelOnly + "[console]\nmode = \"file\"\n"), ["console.path: required when mode = \"file\""])
        XCTAssertEqual(issues(kernelOnly + "[console]\nmode = \"file\"\npath = \"\"\n"), ["console.path: must not be empty"])
        XCTAssertEqual(issues(kernelOnly + "[console]\npath = \"x\"\n"),
                       ["console.path: only used with mode = \"file\" (mode is \"off\")"])
        XCTAssertEqual(issues(kernelOnly + "[console]\nmode = \"hvc\"\n"), ["console.mode: \"hvc\" is not one of terminal, file, off"])
        XCTAssertEqual(issues(kernelOnly + "[console]\nmode = false\n"), ["console.mode: expected a string, got a boolean"])
        XCTAssertEqual(issues(kernelOnly + "[console]\nenabled = true\n"), ["console.enabled: unknown key (did you mean rng.enabled?)"])
        XCTAssertEqual(issues(kernelOnly + "[[console]]\nmode = \"off\"\n"), ["console: expected a table, got an array"])
    }

    func testSerialAndConsoleMayBothBeOnTheTerminal() throws {
        let c = try config(kernelOnly + "[serial]\nmode = \"terminal\"\n[console]\nmode = \"terminal\"\n")
        XCTAssertEqual(c.serial, .terminal)
        XCTAssertEqual(c.virtioConsole, .terminal)
    }

    func testConsoleFileMustNotBeAnotherFile() {
        XCTAssertEqual(issues(kernelOnly + """
            [serial]
            mode = "file"
            path = "out.log"
            [console]
            mode = "file"
            path = "./out.log"
            """), ["console.path: same file as serial.path"])
        XCTAssertEqual(issues(kernelOnly + "[console]\nmode = \"file\"\npath = \"disk.img\"\n[[disk]]\npath = \"disk.img\"\n"),
                       ["console.path: same file as disk[0].path, which would be truncated"])
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = \"file\"\npath = \"vmlinuz\"\n"),
                       ["serial.path: same file as kernel.path, which would be truncated"])
    }

    // MARK: [rng]

    func testRNG() throws {
        XCTAssertTrue(try config(kernelOnly + "[rng]\nenabled = true\n").rng)
        XCTAssertFalse(try config(kernelOnly + "[rng]\nenabled = false\n").rng)
        XCTAssertFalse(try config(kernelOnly + "[rng]\n").rng)
        XCTAssertEqual(issues(kernelOnly + "[rng]\nenabled = \"yes\"\n"), ["rng.enabled: expected a boolean, got a string"])
        XCTAssertEqual(issues("rng = true\n" + kernelOnly), ["rng: expected a table, got a boolean"])
        XCTAssertEqual(issues(kernelOnly + "[rng]\nenable = true\n"), ["rng.enable: unknown key (did you mean enabled?)"])
        XCTAssertEqual(issues(kernelOnly + "[rng]\nsource = \"/dev/random\"\n"), ["rng.source: unknown key"])
    }

    // MARK: Top-level suggestions

    func testSuggestionsNameDeviceTables() {
        XCTAssertEqual(issues(kernelOnly + "[[disks]]\npath = \"a\"\n"), ["disks: unknown table (did you mean [[disk]]?)"])
        XCTAssertEqual(issues(kernelOnly + "[[nets]]\ntap = \"a\"\n"), ["nets: unknown table (did you mean [[net]]?)"])
        XCTAssertEqual(issues(kernelOnly + "[consol]\nmode = \"off\"\n"), ["consol: unknown table (did you mean [console]?)"])
        XCTAssertEqual(issues("tap = \"tap0\"\n" + kernelOnly), ["tap: unknown key (did you mean tap in [[net]]?)"])
        XCTAssertEqual(issues("enabled = true\n" + kernelOnly), ["enabled: unknown key (did you mean rng.enabled?)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nread_only = true\n"),
                       ["machine.read_only: unknown key (did you mean read_only in [[disk]]?)"])
    }

    // MARK: PCI slots

    func testDevicesMustFitOnPCIBus0() throws {
        func disks(_ n: Int) -> String {
            (0..<n).map { "[[disk]]\npath = \"d\($0).img\"\n" }.joined()
        }
        XCTAssertEqual(try config(kernelOnly + disks(31)).disks.count, 31, "slots 1 to 31")
        XCTAssertEqual(issues(kernelOnly + disks(32)),
                       ["disk[31]: no PCI slot left: 32 disks need 32 slots, and PCI bus 0 has 31"])
        XCTAssertEqual(issues(kernelOnly + disks(29) + "[[net]]\ntap = \"a\"\n[[net]]\ntap = \"b\"\n[[net]]\ntap = \"c\"\n"),
                       ["net[2]: no PCI slot left: 29 disks and 3 nets need 32 slots, and PCI bus 0 has 31"])
        XCTAssertEqual(issues(kernelOnly + disks(30) + "[[net]]\ntap = \"a\"\n[console]\nmode = \"terminal\"\n[rng]\nenabled = true\n"),
                       ["console: no PCI slot left: 30 disks, 1 net, the console and the rng need 33 slots, and PCI bus 0 has 31"])
        XCTAssertEqual(issues(kernelOnly + disks(30) + "[[net]]\ntap = \"a\"\n[console]\nmode = \"off\"\n[rng]\nenabled = true\n"),
                       ["rng: no PCI slot left: 30 disks, 1 net and the rng need 32 slots, and PCI bus 0 has 31"],
                       "an off console takes no slot")
    }

    func testThousandsOfEntriesAreCheckedQuickly() {
        // A 1 MiB config holds tens of thousands of entries; duplicate checks must not be quadratic.
        let n = 20_000
        let text = kernelOnly + (0..<n).map { "[[net]]\ntap = \"t\($0)\"\n" }.joined()
        let start = ContinuousClock.now
        let found = issues(text)
        XCTAssertEqual(found, ["net[31]: no PCI slot left: 20000 nets need 20000 slots, and PCI bus 0 has 31"])
        XCTAssertLessThan(ContinuousClock.now - start, .seconds(20))
    }

    // MARK: All together

    func testSeveralMistakesInSeveralEntriesAreReportedTogether() {
        let found = issues("""
            [kernel]
            path = "vmlinuz"
            [console]
            mode = "file"
            [[disk]]
            read_only = "yes"
            size = "1G"
            [[disk]]
            path = ""
            [[disk]]
            path = "fine.img"
            [[net]]
            tap = "tap0"
            mac = "01:00:5e:00:00:01"
            [[net]]
            tap = "this-name-is-too-long"
            mac = "52:54:00:aa:bb:cc"
            [[net]]
            mac = "52:54:00:AA:BB:CC"
            [[net]]
            tap = "tap0"
            mac = "::"
            [rng]
            enabled = 1
            """)
        XCTAssertEqual(found, [
            "console.path: required when mode = \"file\"",
            "disk[0].path: required",
            "disk[0].read_only: expected a boolean, got a string",
            "disk[0].size: unknown key",
            "disk[1].path: must not be empty",
            "net[0].mac: \"01:00:5e:00:00:01\" is a multicast address",
            "net[1].tap: \"this-name-is-too-long\" is 21 characters long; interface names have at most 15 (IFNAMSIZ is 16 with the NUL)",
            "net[2].tap: required",
            "net[2].mac: duplicate of net[1].mac",
            "net[3].tap: duplicate of net[0].tap",
            "net[3].mac: \"::\" is not a MAC address (six hex pairs separated by colons, e.g. \"52:54:00:12:34:56\")",
            "rng.enabled: expected a boolean, got an integer",
        ])
    }

    func testDevicesSurviveOverrides() throws {
        let c = try config(kernelOnly + "[[disk]]\npath = \"a.img\"\n[[net]]\ntap = \"tap0\"\n[rng]\nenabled = true\n")
        let o = try c.overriding(kernel: "/other", memory: "1G", checkFiles: false)
        XCTAssertEqual(o.disks, c.disks)
        XCTAssertEqual(o.nets, c.nets)
        XCTAssertTrue(o.rng)
        XCTAssertEqual(o.kernelPath, "/other")
    }
}

import Foundation
import VMConfig
import XCTest

/// The issues `text` yields, as printed.
func issues(_ text: String, base: String = "/cfg", checkFiles: Bool = false) -> [String] {
    switch ConfigLoader.parse(text, baseDirectory: base, checkFiles: checkFiles) {
    case .success: return []
    case let .failure(e): return e.issues.map(\.description)
    }
}

func config(_ text: String, base: String = "/cfg", checkFiles: Bool = false,
            file: StaticString = #filePath, line: UInt = #line) throws -> VMConfig {
    switch ConfigLoader.parse(text, baseDirectory: base, checkFiles: checkFiles) {
    case let .success(c): return c
    case let .failure(e):
        XCTFail("unexpected: \(e)", file: file, line: line)
        throw e
    }
}

let kernelOnly = "[kernel]\npath = \"vmlinuz\"\n"

final class ConfigLoaderTests: XCTestCase {
    // MARK: Valid configs

    func testMinimalConfigGetsDefaults() throws {
        let c = try config(kernelOnly)
        XCTAssertEqual(c, VMConfig(vcpus: 1, memoryBytes: 512 << 20, kernelPath: "/cfg/vmlinuz", initramfsPath: nil,
                                   cmdline: "console=ttyS0 reboot=k panic=-1", serial: .terminal,
                                   timeoutSeconds: nil, configPath: ""))
    }

    func testEveryKey() throws {
        let c = try config("""
            [machine]
            vcpus = 4
            memory = "2G"
            [kernel]
            path = "/boot/vmlinux"
            initramfs = "initrd.img"
            cmdline = "console=ttyS0 quiet"
            [serial]
            mode = "file"
            path = "logs/console.log"
            [run]
            timeout = "90s"
            """)
        XCTAssertEqual(c.vcpus, 4)
        XCTAssertEqual(c.memoryBytes, 2 << 30)
        XCTAssertEqual(c.kernelPath, "/boot/vmlinux")
        XCTAssertEqual(c.initramfsPath, "/cfg/initrd.img")
        XCTAssertEqual(c.cmdline, "console=ttyS0 quiet")
        XCTAssertEqual(c.serial, .file("/cfg/logs/console.log"))
        XCTAssertEqual(c.timeoutSeconds, 90)
        XCTAssertEqual(c.timeout, .seconds(90))
    }

    func testInlineTablesAndDottedKeys() throws {
        let c = try config("""
            machine = { vcpus = 2, memory = 268435456 }
            kernel.path = "k"
            serial.mode = "off"
            run.timeout = 30
            """)
        XCTAssertEqual(c.vcpus, 2)
        XCTAssertEqual(c.memoryBytes, 256 << 20)
        XCTAssertEqual(c.kernelPath, "/cfg/k")
        XCTAssertEqual(c.serial, .off)
        XCTAssertEqual(c.timeoutSeconds, 30)
    }

    func testBoundaryValuesAreAccepted() throws {
        let low = try config(kernelOnly + "[machine]\nvcpus = 1\nmemory = \"16M\"\n[run]\ntimeout = \"1ms\"\n")
        XCTAssertEqual(low.memoryBytes, 16 << 20)
        XCTAssertEqual(low.timeoutSeconds, 0.001)
        let high = try config(kernelOnly + "[machine]\nvcpus = 254\nmemory = \"1T\"\n[run]\ntimeout = \"8784h\"\n")
        XCTAssertEqual(high.vcpus, 254)
        XCTAssertEqual(high.memoryBytes, 1 << 40)
        XCTAssertEqual(high.timeoutSeconds, 366 * 86400)
        let cmd = String(repeating: "a", count: 2047)
        XCTAssertEqual(try config("[kernel]\npath = \"k\"\ncmdline = \"\(cmd)\"\n").cmdline, cmd)
        XCTAssertEqual(try config("[kernel]\npath = \"k\"\ncmdline = \"\"\n").cmdline, "")
    }

    // MARK: Paths

    func testRelativePathsResolveAgainstTheConfigDirectory() throws {
        let c = try config("""
            [kernel]
            path = "../.cache/guest/vmlinuz"
            initramfs = "./a/./b/../initramfs.cpio.gz"
            [serial]
            mode = "file"
            path = "console.log"
            """, base: "/work/main/configs")
        XCTAssertEqual(c.kernelPath, "/work/main/.cache/guest/vmlinuz")
        XCTAssertEqual(c.initramfsPath, "/work/main/configs/a/initramfs.cpio.gz")
        XCTAssertEqual(c.serial, .file("/work/main/configs/console.log"))
    }

    func testAbsolutePathsAndOddPathsAreKept() throws {
        XCTAssertEqual(try config("[kernel]\npath = \"/a//b/./c\"\n").kernelPath, "/a/b/c")
        XCTAssertEqual(try config("[kernel]\npath = \"../../../../x\"\n", base: "/cfg").kernelPath, "/x")
        XCTAssertEqual(try config("[kernel]\npath = \"~/vmlinuz\"\n").kernelPath, "/cfg/~/vmlinuz", "no ~ expansion")
    }

    func testRelativeBaseDirectoryIsRelativeToTheCurrentDirectory() throws {
        let cwd = FileManager.default.currentDirectoryPath
        let c = try config(kernelOnly, base: "sub")
        XCTAssertEqual(c.kernelPath, (cwd == "/" ? "" : cwd) + "/sub/vmlinuz")
    }

    // MARK: Unknown keys

    func testUnknownKeysWithSuggestions() {
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpu = 2\n"), ["machine.vcpu: unknown key (did you mean vcpus?)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nmemroy = \"1G\"\n"), ["machine.memroy: unknown key (did you mean memory?)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nVCPUS = 2\n"), ["machine.VCPUS: unknown key (did you mean vcpus?)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\npath = \"x\"\n"), ["machine.path: unknown key (did you mean kernel.path?)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\ncolour = \"blue\"\n"), ["machine.colour: unknown key"])
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmod = \"off\"\n"), ["serial.mod: unknown key (did you mean mode?)"])
        XCTAssertEqual(issues(kernelOnly + "[run]\ntimout = \"1s\"\n"), ["run.timout: unknown key (did you mean timeout?)"])
    }

    func testUnknownTopLevelTablesAndKeys() {
        XCTAssertEqual(issues(kernelOnly + "[machin]\nvcpus = 2\n"), ["machin: unknown table (did you mean [machine]?)"])
        XCTAssertEqual(issues(kernelOnly + "[network]\ntap = \"tap0\"\n"), ["network: unknown table"])
        XCTAssertEqual(issues("vcpus = 2\n" + kernelOnly), ["vcpus: unknown key (did you mean machine.vcpus?)"])
        XCTAssertEqual(issues("x = 1\n" + kernelOnly), ["x: unknown key"])
    }

    func testUnknownNestedAndQuotedKeysAreQuotedInTheKeyPath() {
        XCTAssertEqual(issues(kernelOnly + "[machine.extra]\nx = 1\n"), ["machine.extra: unknown key"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\n\"a.b\" = 1\n"), ["machine.\"a.b\": unknown key"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\n\"\" = 1\n"), ["machine.\"\": unknown key"])
        XCTAssertEqual(issues("\"my table\" = {}\n" + kernelOnly), ["\"my table\": unknown table"])
    }

    // MARK: Types

    func testWrongTypes() {
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = \"2\"\n"), ["machine.vcpus: expected an integer, got a string"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = 2.0\n"), ["machine.vcpus: expected an integer, got a float"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = [1]\n"), ["machine.vcpus: expected an integer, got an array"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nmemory = true\n"),
                       ["machine.memory: expected a size such as \"512M\" or an integer number of bytes, got a boolean"])
        XCTAssertEqual(issues("[kernel]\npath = 5\n"), ["kernel.path: expected a string, got an integer"])
        XCTAssertEqual(issues(kernelOnly.replacingOccurrences(of: "\"vmlinuz\"", with: "\"k\"\ninitramfs = 1979-05-27")),
                       ["kernel.initramfs: expected a string, got a date"])
        XCTAssertEqual(issues(kernelOnly + "cmdline = [\"a\"]\n"), ["kernel.cmdline: expected a string, got an array"])
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = 1\n"), ["serial.mode: expected a string, got an integer"])
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = \"file\"\npath = {}\n"), ["serial.path: expected a string, got a table"])
        XCTAssertEqual(issues(kernelOnly + "[run]\ntimeout = 1.5\n"),
                       ["run.timeout: expected a duration such as \"60s\" or an integer number of seconds, got a float"])
        XCTAssertEqual(issues(kernelOnly + "[run]\ntimeout = 07:32:00\n"),
                       ["run.timeout: expected a duration such as \"60s\" or an integer number of seconds, got a time"])
    }

    func testSectionsThatAreNotTables() {
        XCTAssertEqual(issues("machine = 5\n" + kernelOnly), ["machine: expected a table, got an integer"])
        XCTAssertEqual(issues(kernelOnly + "[[run]]\ntimeout = \"1s\"\n"), ["run: expected a table, got an array"])
        XCTAssertEqual(issues("kernel = \"vmlinuz\"\n"), ["kernel: expected a table, got a string", "kernel.path: required"])
    }

    // MARK: Ranges

    func testVCPURange() {
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = 0\n"), ["machine.vcpus: 0 is out of range (1 to 254)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = 255\n"), ["machine.vcpus: 255 is out of range (1 to 254)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = -1\n"), ["machine.vcpus: -1 is out of range (1 to 254)"])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = 9223372036854775807\n"),
                       ["machine.vcpus: 9223372036854775807 is out of range (1 to 254)"])
    }

    func testMemory() {
        func m(_ v: String) -> [String] { issues(kernelOnly + "[machine]\nmemory = \(v)\n") }
        XCTAssertEqual(m("\"12Q\""), ["machine.memory: \"12Q\" is not a size (use e.g. 512M, 2G)"])
        XCTAssertEqual(m("\"\""), ["machine.memory: \"\" is not a size (use e.g. 512M, 2G)"])
        XCTAssertEqual(m("\"8M\""), ["machine.memory: \"8M\" is less than the minimum 16M"])
        XCTAssertEqual(m("\"2T\""), ["machine.memory: \"2T\" is more than the maximum 1T"])
        XCTAssertEqual(m("\"99999999999999999999G\""), ["machine.memory: \"99999999999999999999G\" is more than the maximum 1T"])
        XCTAssertEqual(m("\"16777217K\""), ["machine.memory: \"16777217K\" is not a multiple of 4K (the page size)"])
        XCTAssertEqual(m("100000000"), ["machine.memory: 100000000 is not a multiple of 4K (the page size)"])
        XCTAssertEqual(m("-5"), ["machine.memory: -5 is less than the minimum 16M"])
        XCTAssertEqual(m("0"), ["machine.memory: 0 is less than the minimum 16M"])
        XCTAssertEqual(m("9223372036854775807"), ["machine.memory: 9223372036854775807 is more than the maximum 1T"])
        XCTAssertEqual(m("\"20K\""), ["machine.memory: \"20K\" is less than the minimum 16M"])
        XCTAssertEqual(m("\"512M\""), [])
        XCTAssertEqual(m("16777216"), [])
    }

    func testCmdlineLength() {
        let long = String(repeating: "a", count: 2048)
        XCTAssertEqual(issues("[kernel]\npath = \"k\"\ncmdline = \"\(long)\"\n"),
                       ["kernel.cmdline: is 2048 bytes long; Linux takes at most 2047 (COMMAND_LINE_SIZE)"])
        let multibyte = String(repeating: "é", count: 1024) // 2 bytes each
        XCTAssertEqual(issues("[kernel]\npath = \"k\"\ncmdline = \"\(multibyte)\"\n").count, 1)
    }

    func testTimeout() {
        func t(_ v: String) -> [String] { issues(kernelOnly + "[run]\ntimeout = \(v)\n") }
        XCTAssertEqual(t("\"90x\""), ["run.timeout: \"90x\" is not a duration (use e.g. 90s, 5m, 1h, 250ms)"])
        XCTAssertEqual(t("\"90\""), ["run.timeout: \"90\" is not a duration (use e.g. 90s, 5m, 1h, 250ms)"])
        XCTAssertEqual(t("\"0s\""), ["run.timeout: \"0s\" is not more than 0 (leave run.timeout out for no limit)"])
        XCTAssertEqual(t("0"), ["run.timeout: 0 is not more than 0 (leave run.timeout out for no limit)"])
        XCTAssertEqual(t("-5"), ["run.timeout: -5 is not more than 0 (leave run.timeout out for no limit)"])
        XCTAssertEqual(t("\"8785h\""), ["run.timeout: \"8785h\" is longer than the maximum 366 days"])
        XCTAssertEqual(t("\"99999999999999999999h\""), ["run.timeout: \"99999999999999999999h\" is longer than the maximum 366 days"])
        XCTAssertEqual(t("9223372036854775807"), ["run.timeout: 9223372036854775807 is longer than the maximum 366 days"])
        XCTAssertEqual(t("31622401"), ["run.timeout: 31622401 is longer than the maximum 366 days"])
        XCTAssertEqual(t("31622400"), [])
    }

    // MARK: Required keys and serial

    func testKernelPathIsRequired() {
        XCTAssertEqual(issues(""), ["kernel.path: required"])
        XCTAssertEqual(issues("[kernel]\ninitramfs = \"i\"\n"), ["kernel.path: required"])
        XCTAssertEqual(issues("[kernel]\npath = \"\"\n"), ["kernel.path: must not be empty"])
        XCTAssertEqual(issues("[kernel]\npath = \"k\"\ninitramfs = \"\"\n"), ["kernel.initramfs: must not be empty"])
    }

    func testSerialModes() throws {
        XCTAssertEqual(try config(kernelOnly + "[serial]\nmode = \"terminal\"\n").serial, .terminal)
        XCTAssertEqual(try config(kernelOnly + "[serial]\nmode = \"off\"\n").serial, .off)
        XCTAssertEqual(try config(kernelOnly + "[serial]\n").serial, .terminal)
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = \"tty\"\n"), ["serial.mode: \"tty\" is not one of terminal, file, off"])
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = \"File\"\n"), ["serial.mode: \"File\" is not one of terminal, file, off"])
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = \"tty\"\npath = \"x\"\n"), ["serial.mode: \"tty\" is not one of terminal, file, off"],
                       "no second complaint about path when the mode is unknown")
    }

    func testSerialPathRequiredIffModeIsFile() {
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = \"file\"\n"), ["serial.path: required when mode = \"file\""])
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = \"file\"\npath = \"\"\n"), ["serial.path: must not be empty"])
        XCTAssertEqual(issues(kernelOnly + "[serial]\nmode = \"off\"\npath = \"x\"\n"),
                       ["serial.path: only used with mode = \"file\" (mode is \"off\")"])
        XCTAssertEqual(issues(kernelOnly + "[serial]\npath = \"x\"\n"),
                       ["serial.path: only used with mode = \"file\" (mode is \"terminal\")"])
    }

    // MARK: All together

    func testEveryMistakeIsReportedAtOnce() {
        let found = issues("""
            [machine]
            vcpus = 0
            memory = "12Q"
            colour = "blue"
            [kernel]
            initramfs = 7
            [serial]
            mode = "file"
            """)
        XCTAssertEqual(found, [
            "machine.vcpus: 0 is out of range (1 to 254)",
            "machine.memory: \"12Q\" is not a size (use e.g. 512M, 2G)",
            "machine.colour: unknown key",
            "kernel.initramfs: expected a string, got an integer",
            "serial.path: required when mode = \"file\"",
            "kernel.path: required",
        ])
    }

    func testFiveMistakesGiveFiveIssues() {
        let found = issues("""
            [machine]
            vcpu = 2
            memory = "1Q"
            [kernel]
            path = "k"
            cmdline = 3
            [run]
            timeout = "soon"
            [disk]
            """)
        XCTAssertEqual(found.count, 5, "\(found)")
    }

    func testErrorDescriptionListsEveryIssue() {
        guard case let .failure(e) = ConfigLoader.parse("[machine]\nvcpus = 0\n", baseDirectory: "/cfg") else {
            return XCTFail("expected a failure")
        }
        XCTAssertNil(e.configPath)
        XCTAssertEqual(e.description, """
            config: 2 problems
              machine.vcpus: 0 is out of range (1 to 254)
              kernel.path: required
            """)
        XCTAssertEqual(e.localizedDescription, e.description)
        XCTAssertEqual(ConfigIssue(keyPath: "", message: "m").description, "m")
        XCTAssertEqual(ConfigError(issues: [ConfigIssue(keyPath: "a", message: "b")], configPath: "/x.toml").description,
                       "config /x.toml: 1 problem\n  a: b")
    }

    // MARK: Syntax

    func testTOMLSyntaxErrorsHaveLineAndColumn() {
        let found = issues("[machine]\nvcpus = 1\nmemory = \n")
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].hasPrefix("TOML syntax error at line 3, column "), found[0])
        let unterminated = issues("[machine\nvcpus = 1\n")
        XCTAssertEqual(unterminated.count, 1)
        XCTAssertTrue(unterminated[0].contains("line 1"), unterminated[0])
    }

    func testDuplicateKeysAreSyntaxErrors() {
        let found = issues(kernelOnly + "[machine]\nvcpus = 1\nvcpus = 2\n")
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].hasPrefix("TOML syntax error at line 5"), found[0])
    }

    func testIntegerOverflowInTOMLIsASyntaxError() {
        let found = issues(kernelOnly + "[machine]\nvcpus = 99999999999999999999\n")
        XCTAssertEqual(found.count, 1)
        XCTAssertTrue(found[0].hasPrefix("TOML syntax error at line 4"), found[0])
    }

    func testNULsAreRefused() {
        XCTAssertEqual(issues(kernelOnly + "cmdline = \"a\u{0}b\"\n"), ["line 3: the file contains a NUL byte"])
        XCTAssertEqual(issues(kernelOnly + "cmdline = \"a\\u0000b\"\n"), ["line 3: NUL characters (\\u0000) are not supported"])
        XCTAssertEqual(issues("[kernel]\n\"p\\U00000000\" = 1\n"), ["line 2: NUL characters (\\u0000) are not supported"])
        // An escaped backslash followed by "u0000" is text, not a NUL.
        XCTAssertEqual(try config(kernelOnly + "cmdline = \"a\\\\u0000b\"\n").cmdline, "a\\u0000b")
    }

    /// toml++ (under TOMLKit) aborts on a non-ASCII bare key (found by the
    /// `config` fuzz target, Fuzz/corpus/config/crash-nonascii-table): such
    /// text is refused with its place before the parser sees it; inside
    /// strings and comments it is fine.
    func testNonASCIIOutsideStringsIsRefusedNotParsed() throws {
        let message = "a non-ASCII character outside a string or comment (keys without quotes use only A-Z a-z 0-9 _ -; quote the key or the value)"
        XCTAssertEqual(issues("[\u{FFFD}machine]\nvcpus = 1\n"), ["line 1, column 2: " + message])
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = 1 é\n"), ["line 4, column 11: " + message])
        XCTAssertEqual(issues("[kernel]\npath = \"k\"\ncmdline = 'x'\né = 1\n"), ["line 4, column 1: " + message])
        XCTAssertEqual(issues("a = \"\"\"\nq\"\"\"\"\né = 1\n"), ["line 3, column 1: " + message])
        let header = "a table header must start with a key (A-Z a-z 0-9 _ - or a quoted key)"
        XCTAssertEqual(issues("[,]\n"), ["line 1, column 2: " + header])
        XCTAssertEqual(issues("x = 1\n  [[ =]]\n"), ["line 2, column 6: " + header])
        XCTAssertEqual(issues("[[\nkdsi]]\n"), ["line 1, column 3: " + header])
        // Inside an array value a "[" is not a header.
        XCTAssertEqual(issues(kernelOnly + "[machine]\nvcpus = [\n[ {}],\n]\n").count, 1)
        XCTAssertFalse(issues(kernelOnly + "[machine]\nvcpus = [\n[ {}],\n]\n")[0].contains("header"))
        // In strings of every kind, in quoted keys and in comments: parsed as usual.
        let c = try config(kernelOnly + "# réglage\ncmdline = \"console=ttyS0 é \\\" ü\" # ß\n")
        XCTAssertEqual(c.cmdline, "console=ttyS0 é \" ü")
        XCTAssertEqual(try config(kernelOnly + "cmdline = '''\nà '' ö'''\n").cmdline, "à '' ö")
        XCTAssertEqual(try config(kernelOnly + "cmdline = \"\"\"\nà \"\" ö\"\"\"\n").cmdline, "à \"\" ö")
        XCTAssertEqual(try config(kernelOnly + "cmdline = 'ñ'\n").cmdline, "ñ")
        XCTAssertEqual(issues(kernelOnly + "[machine]\n\"vçpus\" = 1\n"), ["machine.\"vçpus\": unknown key (did you mean vcpus?)"])
    }

    /// toml++ also aborts on a "}" where an array's next value goes (found by
    /// the `config` fuzz target, Fuzz/corpus/config/crash-brace-in-array): refused
    /// with its place; braces that close inline tables inside arrays, and arrays
    /// inside inline tables, still parse as TOML says.
    func testABraceWhereAnArrayValueGoesIsRefusedNotParsed() throws {
        let message = "\"}\" where an array's next value goes (an array ends with \"]\")"
        XCTAssertEqual(issues("[[passthrough]]\ndevice = [}\n"), ["line 2, column 11: " + message])
        XCTAssertEqual(issues("a = [1, }\n"), ["line 1, column 9: " + message])
        XCTAssertEqual(issues("a = [\n  # a comment\n\t}\n"), ["line 3, column 2: " + message])
        XCTAssertEqual(issues("a = [[1], [ }]]\n"), ["line 1, column 13: " + message])
        XCTAssertEqual(issues("a = { b = [2, }\n"), ["line 1, column 15: " + message])
        // Not a trap: "}" closing an inline table, or after a value; a "," in a header.
        XCTAssertFalse(issues("a = [{}, { b = [1] }]\n").contains { $0.contains("array's next value") })
        XCTAssertFalse(issues("a = { b = [1, 2] }\n").contains { $0.contains("array's next value") })
        XCTAssertFalse(issues("a = [1 }\n").contains { $0.contains("array's next value") })
        XCTAssertFalse(issues("a = [\"}\", '}', \"\"\"}\"\"\"]\n").contains { $0.contains("array's next value") })
        XCTAssertEqual(try config(kernelOnly + "cmdline = \"[}\"\n").cmdline, "[}")
    }

    func testCRLFLineEndings() throws {
        let c = try config("[machine]\r\nvcpus = 3\r\n[kernel]\r\npath = \"k\"\r\n")
        XCTAssertEqual(c.vcpus, 3)
        XCTAssertEqual(issues("[machine]\r\nvcpus = 3\r\n\r\nx = \"\0\"\r\n"), ["line 4: the file contains a NUL byte"])
    }
}

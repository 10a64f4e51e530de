import Foundation
import VMConfig
import XCTest

/// `[[vfio_user]]` and `--vfio-user`: every key checked with its key path.
final class VFIOUserConfigTests: XCTestCase {
    func testEntriesWithDefaultsAndKeys() throws {
        let c = try config(kernelOnly + """
            [[vfio_user]]
            socket = "gpio.sock"
            [[vfio_user]]
            socket = "/run/nvme.sock"
            dma = "message"
            bars = { 0 = 0xe0000000 }
            """)
        XCTAssertEqual(c.vfioUser, [
            VFIOUserConfig(socket: "/cfg/gpio.sock"),
            VFIOUserConfig(socket: "/run/nvme.sock", dma: .message, barAddresses: [0: 0xE000_0000]),
        ])
        XCTAssertEqual(try config(kernelOnly).vfioUser, [])
    }

    func testBadKeysNameThePath() {
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\ndma = \"fd\"\n"),
                       ["vfio_user[0].socket: required (the path of the vfio-user server's listening socket)"])
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\nsocket = \"a\"\ndma = \"shared\"\n"),
                       ["vfio_user[0].dma: expected \"fd\" (guest RAM passed to the server) or \"message\" (every transfer checked by the VMM), got \"shared\""])
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\nsocket = 3\n"), ["vfio_user[0].socket: expected a string, got an integer"])
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\nsocket = \"\"\n"), ["vfio_user[0].socket: must not be empty"])
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\nsocket = \"a\"\n[[vfio_user]]\nsocket = \"/cfg/a\"\n"),
                       ["vfio_user[1].socket: /cfg/a is a duplicate of vfio_user[0].socket"])
        let long = "/" + String(repeating: "s", count: 107)
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\nsocket = \"\(long)\"\n"),
                       ["vfio_user[0].socket: \(long) is 108 bytes; a UNIX socket path holds at most 107"])
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\nsocket = \"a\"\nbars = { 7 = 0x1000 }\n").count, 1)
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\nsocket = \"a\"\ntap = \"x\"\n").first?.hasPrefix("vfio_user[0].tap: unknown key"), true)
    }

    func testSocketIsCheckedOnDisk() throws {
        let dir = try TempDir()
        let file = try dir.file("not-a-socket")
        let missing = dir.path + "/missing.sock"
        XCTAssertEqual(issues(kernelOnly + "[[vfio_user]]\nsocket = \"\(missing)\"\n", checkFiles: false), [])
        let found = issues("[kernel]\npath = \"\(file)\"\n[[vfio_user]]\nsocket = \"\(missing)\"\n[[vfio_user]]\nsocket = \"\(file)\"\n[[vfio_user]]\nsocket = \"\(dir.path)\"\n",
                           checkFiles: true)
        XCTAssertEqual(found, [
            "vfio_user[0].socket: \(missing): no such socket (is the vfio-user server running and listening there?)",
            "vfio_user[1].socket: \(file): is a regular file, not a socket",
            "vfio_user[2].socket: \(dir.path): is a directory, not a socket",
        ])
    }

    func testOverridesAppendAndTakeSlots() throws {
        guard case let .success(c) = ConfigLoader.parse(
            kernelOnly + "[[vfio_user]]\nsocket = \"a.sock\"\n", baseDirectory: "/cfg",
            overrides: ConfigOverrides(vfioUser: ["b.sock"]), overridesRelativeTo: "/cwd", checkFiles: false) else { return XCTFail("refused") }
        XCTAssertEqual(c.vfioUser, [VFIOUserConfig(socket: "/cfg/a.sock"), VFIOUserConfig(socket: "/cwd/b.sock")])
        XCTAssertFalse(ConfigOverrides(vfioUser: ["x"]).isEmpty)
        guard case let .failure(e) = ConfigLoader.parse(
            kernelOnly + "[[vfio_user]]\nsocket = \"a.sock\"\n", baseDirectory: "/cfg",
            overrides: ConfigOverrides(vfioUser: ["/cfg/a.sock"]), overridesRelativeTo: "/cwd", checkFiles: false) else { return XCTFail("accepted") }
        XCTAssertEqual(e.issues.map(\.description), ["--vfio-user: /cfg/a.sock is a duplicate of vfio_user[0].socket"])
        let disks = String(repeating: "[[disk]]\npath = \"d.img\"\nread_only = true\n", count: 30)
        XCTAssertEqual(issues(kernelOnly + disks + "[[vfio_user]]\nsocket = \"a\"\n[[vfio_user]]\nsocket = \"b\"\n"),
                       ["vfio_user[1]: no PCI slot left: 30 disks and 2 vfio-user devices need 32 slots, and PCI bus 0 has 31"])
        let loaded = try config(kernelOnly + disks + "[[vfio_user]]\nsocket = \"a\"\n")
        XCTAssertThrowsError(try loaded.overriding(checkFiles: false, vfioUserSockets: ["b"])) { e in
            XCTAssertEqual((e as? ConfigError)?.issues.map(\.description),
                           ["--vfio-user: no PCI slot left: 30 disks and 2 vfio-user devices need 32 slots, and PCI bus 0 has 31"])
        }
    }
}

private extension VMConfig {
    func overriding(checkFiles: Bool, vfioUserSockets: [String]) throws -> VMConfig {
        try overriding(vfioUser: vfioUserSockets, relativeTo: "/cwd", checkFiles: checkFiles)
    }
}

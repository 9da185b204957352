"""Ask a Pi's dnsmasq what a tablet on the classroom Wi-Fi would ask: DNS, and DHCP through a
veth standing in for the radio (no Wi-Fi radio can exist in these containers)."""

from __future__ import annotations

# A DNS query for an A record, sent from inside the container to dnsmasq on the loopback
# (dnsmasq adds it to the interfaces it serves); prints the answered addresses.
DNS_QUERY = r"""
import socket, struct, sys
name = sys.argv[1]
q = struct.pack(">HHHHHH", 0x5049, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, ("127.0.0.1", 53))
r = s.recv(512)
rcode, count = r[3] & 15, struct.unpack(">H", r[6:8])[0]
print("rcode", rcode)
i = len(q)
for _ in range(count):
    rtype, rdlen = struct.unpack(">H", r[i + 2:i + 4])[0], struct.unpack(">H", r[i + 10:i + 12])[0]
    if rtype == 1:
        print(".".join(map(str, r[i + 12:i + 16])))
    i += 12 + rdlen
"""

# A DHCP DISCOVER broadcast on an interface (argv[1]); prints the offered address and the
# router, DNS and NTP servers of the OFFER.
DHCP_DISCOVER = r"""
import random, socket, struct, sys
iface = sys.argv[1]
mac = bytes.fromhex(open("/sys/class/net/%s/address" % iface).read().strip().replace(":", ""))
xid = random.getrandbits(32)
pkt = struct.pack("!BBBBIHH16s16s", 1, 1, 6, 0, xid, 0, 0x8000, bytes(16), mac + bytes(10))
pkt += bytes(192) + b"\x63\x82\x53\x63" + bytes([53, 1, 1, 55, 4, 1, 3, 6, 42, 255])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
s.bind(("", 68))
s.settimeout(10)
s.sendto(pkt, ("255.255.255.255", 67))
while True:
    r = s.recv(1500)
    if r[0] == 2 and r[4:8] == struct.pack("!I", xid):
        break
print("offer", socket.inet_ntoa(r[16:20]))
i, options = 240, {}
while i < len(r) and r[i] != 255:
    if r[i] == 0:
        i += 1
        continue
    options[r[i]] = r[i + 2:i + 2 + r[i + 1]]
    i += 2 + r[i + 1]
for code, label in ((3, "router"), (6, "dns"), (42, "ntp")):
    if code in options:
        print(label, socket.inet_ntoa(options[code][:4]))
"""


def dns_answer(host, name: str) -> list[str]:
    """["rcode", "<n>", addresses...] as dnsmasq on the Pi answers an A query for name."""
    return host.check_output(f"python3 -c '{DNS_QUERY}' {name}").split()


def dhcp_offer(host, radio: str, address: str) -> dict[str, str]:
    """What dnsmasq offers a tablet on `radio`: a veth of that name carries the Pi's classroom
    address (as the address unit would put it on the radio), its peer sits in a network
    namespace of its own where the DISCOVER is sent. Everything is removed afterwards."""
    setup = (
        "ip netns add pipacs-tablet && "
        f"ip link add {radio} type veth peer name tablet0 netns pipacs-tablet && "
        f"ip address add {address} dev {radio} && ip link set {radio} up && "
        "ip -n pipacs-tablet link set tablet0 up && ip -n pipacs-tablet link set lo up && "
        "ip -n pipacs-tablet address add 169.254.7.7/16 dev tablet0 && "
        "ip -n pipacs-tablet route add default dev tablet0"
    )
    try:
        host.check_output(setup)
        # dnsmasq (bind-dynamic) notices the new interface within a moment.
        out = host.run(f"sleep 1; ip netns exec pipacs-tablet python3 -c '{DHCP_DISCOVER}' tablet0")
        assert out.rc == 0, out.stderr
        return dict(line.split(" ", 1) for line in out.stdout.splitlines())
    finally:
        host.run(f"ip link delete {radio}; ip netns delete pipacs-tablet")

#!/bin/bash
# SPDX-License-Identifier: GPL-2.0-or-later
# cowpool nbd with TLS: PSK over a unix socket and X.509 (client
# certificates required) over loopback TCP, with nbdinfo and nbdcopy as
# clients; plain clients, unknown PSK identities, wrong keys and clients
# without a certificate are refused.  Certificates are made with openssl.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/nbd_lib.sh"
requires qemu-img qemu-io nbdinfo nbdcopy openssl python3
nbd_init

qemu-img create -q -f qcow2 disk.qcow2 16M
qemu-io -c "write -P 0x42 1M 2M" -c "write -z 4M 1M" disk.qcow2 >/dev/null ||
	fail "qemu-io"

# --- PSK over a unix socket ----------------------------------------------------
echo "alice:$(openssl rand -hex 32)" >keys.psk
echo "alice:$(openssl rand -hex 32)" >wrong.psk
echo "bob:$(openssl rand -hex 32)" >bob.psk
if ! nbd_start psk -e 0 -t -x e --tls-psk keys.psk disk.qcow2 2>start.err; then
	if grep -q "without GnuTLS" start.err; then
		echo "SKIP: cowpool was built without GnuTLS" >&2
		exit 77
	fi
	fail "start psk: $(cat start.err)"
fi
u() { echo "nbds+unix://$1@/e?socket=$TMP/psk.sock&tls-psk-file=$TMP/$2"; }
nbdinfo "$(u alice keys.psk)" >info.txt 2>&1 || fail "nbdinfo over PSK"
grep -q "with TLS" info.txt && ok || fail "PSK session is not TLS"
nbdcopy "$(u alice keys.psk)" out.raw || fail "nbdcopy over PSK"
qemu-img compare -q -U -f raw out.raw disk.qcow2 && ok || fail "PSK copy differs"
nbdinfo "$(u alice wrong.psk)" >/dev/null 2>&1 && fail "wrong key accepted" || ok
nbdinfo "$(u bob bob.psk)" >/dev/null 2>&1 && fail "unknown identity accepted" || ok
nbdinfo "nbd+unix:///e?socket=$TMP/psk.sock" >/dev/null 2>&1 &&
	fail "plain client served by a TLS server" || ok
# qemu-img prints the server's message of NBD_REP_ERR_TLS_REQD
qemu-img info "nbd+unix:///e?socket=$TMP/psk.sock" >plain.txt 2>&1 &&
	fail "plain qemu-img served by a TLS server" || ok
grep -q "TLS is required" plain.txt && ok || fail "no TLS_REQD: $(cat plain.txt)"
nbdinfo "$(u alice keys.psk)" >/dev/null 2>&1 && ok ||
	fail "server stopped serving after refused clients"
nbd_stop psk

# --- X.509 over loopback TCP -------------------------------------------------
mkdir pki nocert
(
	cd pki &&
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca-key.pem \
		-out ca-cert.pem -days 2 -subj "/CN=cowpool test CA" &&
	openssl req -newkey rsa:2048 -nodes -keyout server-key.pem \
		-out server.csr -subj "/CN=localhost" &&
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >s.ext &&
	openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem \
		-CAcreateserial -out server-cert.pem -days 2 -extfile s.ext &&
	openssl req -newkey rsa:2048 -nodes -keyout client-key.pem \
		-out client.csr -subj "/CN=client" &&
	printf 'extendedKeyUsage=clientAuth\n' >c.ext &&
	openssl x509 -req -in client.csr -CA ca-cert.pem -CAkey ca-key.pem \
		-CAcreateserial -out client-cert.pem -days 2 -extfile c.ext
) >openssl.log 2>&1 || { cat openssl.log >&2; fail "openssl"; cp_finish; }
cp pki/ca-cert.pem nocert/
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NBD_PIDFILES="$NBD_PIDFILES $TMP/x509.pid"
"$COWPOOL" nbd -b 127.0.0.1 -p "$port" -e 0 -t -x e --tls-creds pki \
	--fork --pid-file "$TMP/x509.pid" disk.qcow2 || fail "start x509"
x="nbds://localhost:$port/e?tls-certificates=$TMP"
nbdinfo --map "$x/pki" >map.txt 2>&1 || fail "nbdinfo over X.509"
grep -q "hole,zero" map.txt && ok || fail "map over X.509: $(cat map.txt)"
nbdcopy "$x/pki" out2.raw || fail "nbdcopy over X.509"
qemu-img compare -q -U -f raw out2.raw disk.qcow2 && ok || fail "X.509 copy differs"
nbdinfo "$x/nocert" >/dev/null 2>&1 && fail "client without a certificate accepted" || ok
nbdinfo "nbd://localhost:$port/e" >/dev/null 2>&1 &&
	fail "plain client served over TCP with TLS configured" || ok
nbd_stop x509

# a missing credential file fails before --fork returns
"$COWPOOL" nbd -k "$TMP/m.sock" --fork --tls-creds nocert disk.qcow2 \
	2>err.txt && fail "started without server-cert.pem" || ok
grep -q "server-cert.pem" err.txt && ok || fail "error does not name the file"

cp_finish

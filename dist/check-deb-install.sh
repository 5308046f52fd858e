#!/bin/bash
# Run by `cargo xtask dist --check` inside a clean Debian container (no systemd) with the package at
# /pkg/aether.deb: installs it, checks what postinst made, starts the node as user aether with the packaged
# config, waits for /health/ready to answer 200, then checks that a reinstall keeps the secret and the config's
# edits, that remove keeps the data and that purge deletes it.
set -eu

fail() { echo "check-deb-install: $*" >&2; exit 1; }

dpkg -i /pkg/aether.deb
getent passwd aether >/dev/null || fail "postinst did not create the user aether"
[ "$(stat -c '%a %U' /var/lib/aether)" = "700 aether" ] || fail "/var/lib/aether is $(stat -c '%a %U' /var/lib/aether)"
[ "$(stat -c '%a %U' /etc/aether/secret)" = "600 aether" ] || fail "/etc/aether/secret is $(stat -c '%a %U' /etc/aether/secret)"
[ -s /etc/aether/secret ] || fail "/etc/aether/secret is empty"
[ -f /lib/systemd/system/aetherd.service ] || fail "no unit installed"
grep -qx 'ExecStart=/usr/bin/aetherd --config /etc/aether/aetherd.toml' /lib/systemd/system/aetherd.service \
    || fail "the packaged unit does not start /usr/bin/aetherd"
/usr/bin/aether --help >/dev/null 2>&1 || /usr/bin/aether help >/dev/null 2>&1 || fail "/usr/bin/aether does not run"

runuser -u aether -- /usr/bin/aetherd --config /etc/aether/aetherd.toml >/tmp/aetherd.log 2>&1 &
node=$!

ready() {
    exec 3<>/dev/tcp/127.0.0.1/8080 || return 1
    printf 'GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: close\r\n\r\n' >&3
    local status
    status=$(head -n 1 <&3)
    exec 3<&-
    case "$status" in "HTTP/1.1 200"*) return 0 ;; *) return 1 ;; esac
}

for _ in $(seq 1 150); do
    if ready 2>/dev/null; then
        echo "check-deb-install: the node answers /health/ready with 200"
        kill -TERM "$node"
        wait "$node" || true
        secret=$(cat /etc/aether/secret)
        echo '# edited' >>/etc/aether/aetherd.toml
        dpkg -i --force-confold /pkg/aether.deb
        [ "$(cat /etc/aether/secret)" = "$secret" ] || fail "reinstalling replaced the cluster secret"
        grep -qx '# edited' /etc/aether/aetherd.toml || fail "reinstalling dropped an edit of the config"
        echo "check-deb-install: reinstalling keeps the secret and the config's edits"
        dpkg -r aether
        [ -d /var/lib/aether ] && [ -f /etc/aether/secret ] || fail "remove deleted the data dir or the secret"
        dpkg -P aether
        [ ! -e /var/lib/aether ] || fail "purge kept /var/lib/aether"
        ! getent passwd aether >/dev/null || fail "purge kept the user aether"
        echo "check-deb-install: remove keeps the data, purge deletes it"
        exit 0
    fi
    kill -0 "$node" 2>/dev/null || { cat /tmp/aetherd.log >&2; fail "aetherd exited"; }
    sleep 0.2
done
cat /tmp/aetherd.log >&2
fail "no 200 from /health/ready within 30 s"

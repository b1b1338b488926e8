#!/usr/bin/env bash
# Installs (from Debian's packages) and starts what the tests and the demo need:
# PostgreSQL on 127.0.0.1:5432 (trust auth), Redis on 6379, Memcached on 11211,
# and Prometheus's promtool. Idempotent: anything already running is left alone.
# With arguments, only those services: postgres redis memcached promtool.
# The functions are named start_* so that they never shadow the commands they
# start (a function called memcached that runs memcached recurses until bash
# crashes).
set -euo pipefail

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(postgres redis memcached promtool)

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

updated=0
install() {
	if [ "$updated" -eq 0 ]; then
		sudo_ apt-get update -qq
		updated=1
	fi
	sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
	for _ in $(seq 1 50); do
		port_open "$1" && return 0
		sleep 0.2
	done
	echo "services: nothing answers on 127.0.0.1:$1 after starting $2" >&2
	return 1
}

start_postgres() {
	local ver
	if ! port_open 5432; then
		command -v pg_ctlcluster >/dev/null || install postgresql
		ver=$(ls /etc/postgresql | sort -V | tail -1)
		sudo_ pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
		wait_port 5432 PostgreSQL
		# Trust auth for local TCP, as on the project's machines; only if no role can log in yet.
		if ! psql -h 127.0.0.1 -U postgres -d postgres -c 'select 1' >/dev/null 2>&1; then
			local hba
			hba=$(ls /etc/postgresql/"$ver"/main/pg_hba.conf)
			sudo_ sed -i 's/^\(host\s\+all\s\+all\s\+127.0.0.1\/32\s\+\).*/\1trust/' "$hba"
			sudo_ pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
		fi
	fi
	# Replication from the loopback, for the read-replica tests' standby
	# (internal/pgtest/standby.go adds the same line when it is missing).
	local hba_file
	hba_file=$(psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SHOW hba_file')
	if ! sudo_ grep -q '^host\s\+replication\s\+all\s\+127.0.0.1/32\s\+trust' "$hba_file"; then
		echo 'host replication all 127.0.0.1/32 trust' | sudo_ tee -a "$hba_file" >/dev/null
		psql -h 127.0.0.1 -U postgres -d postgres -Atc 'SELECT pg_reload_conf()' >/dev/null
	fi
}

start_redis() {
	if port_open 6379; then return; fi
	command -v redis-server >/dev/null || install redis-server
	mkdir -p /tmp/sidecar-redis
	redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/sidecar-redis --logfile /tmp/sidecar-redis/redis.log
	wait_port 6379 Redis
}

start_memcached() {
	if port_open 11211; then return; fi
	command -v memcached >/dev/null || install memcached
	local user=()
	[ "$(id -u)" -eq 0 ] && user=(-u "$(id -un)")
	memcached -d "${user[@]}" -l 127.0.0.1 -p 11211 -m 64
	wait_port 11211 Memcached
}

start_promtool() {
	command -v promtool >/dev/null && command -v prometheus >/dev/null && return
	install prometheus
	# The package's service may start Prometheus on :9090; the tests run their own.
	pkill -x prometheus 2>/dev/null || true
}

for s in "${want[@]}"; do
	case "$s" in
		postgres|redis|memcached|promtool) "start_$s" ;;
		*) echo "services: unknown service $s" >&2; exit 2 ;;
	esac
done

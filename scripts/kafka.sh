#!/usr/bin/env bash
# A local single-node Apache Kafka (KRaft, combined broker+controller) for tests and the demo.
#
#   scripts/kafka.sh start     resolve the jars (cached), format the log dir once, start, wait until
#                              the broker answers a metadata request; does nothing if already running
#   scripts/kafka.sh stop      controlled shutdown (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh status    running or not, and what the broker answers
#   scripts/kafka.sh logs [-f] the broker's log (last 100 lines, or follow)
#   scripts/kafka.sh wipe      stop and delete the log dir: the next start formats a new cluster
#   scripts/kafka.sh bootstrap print the bootstrap address clients should use
#   scripts/kafka.sh version   print the Apache Kafka version this script runs
#
# Environment:
#   TANDEM_KAFKA_BOOTSTRAP   use this cluster instead: start/stop/wipe do nothing, status probes it
#   TANDEM_BROKER_PORT        client port (default 19092); the controller listens on PORT+1
#   TANDEM_BROKER_HOME        broker state: config, log dir, pid, broker.log (default <repo>/.kafka)
#   TANDEM_BROKER_CACHE       jar cache shared by clones (default ~/.cache/tandem/kafka-<version>)
#   TANDEM_BROKER_HEAP        JVM heap (default 512m)
#   TANDEM_BROKER_SASL_PORT   also listen here with SASL_PLAINTEXT, mechanism PLAIN (default: no)
#   TANDEM_BROKER_SASL_USERS  its users, "name:password name:password" (default "tandem:tandem-secret")
#   TANDEM_PYTHON            interpreter with the project installed (default <repo>/.venv/bin/python)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
pom=$here/kafka/pom.xml
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
port=${TANDEM_BROKER_PORT:-19092}
controller_port=$((port + 1))
home=${TANDEM_BROKER_HOME:-$repo/.kafka}
cache=${TANDEM_BROKER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem/kafka-$version}
python=${TANDEM_PYTHON:-$repo/.venv/bin/python}
heap=${TANDEM_BROKER_HEAP:-512m}
sasl_port=${TANDEM_BROKER_SASL_PORT:-}
sasl_users=${TANDEM_BROKER_SASL_USERS:-tandem:tandem-secret}
start_timeout_s=${TANDEM_BROKER_START_TIMEOUT:-120}
libs=$cache/libs
pidfile=$home/broker.pid
logfile=$home/broker.log
bootstrap=127.0.0.1:$port

say() { echo "kafka.sh: $*" >&2; }

die() {
  say "$*"
  if [[ -f $logfile ]]; then
    say "last lines of $logfile since this start:"
    awk '/^===== start /{n=0} {lines[n++]=$0} END{for(i=(n>40?n-40:0);i<n;i++) print lines[i]}' \
      "$logfile" >&2
  fi
  exit 1
}

broker_pid() {
  # Prints the pid of this checkout's broker if it is alive (and really a Kafka JVM), else nothing.
  [[ -f $pidfile ]] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && ps -ww -p "$pid" -o args= | grep -q 'kafka\.Kafka'; then
    echo "$pid"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

probe() {
  # One metadata request; prints the broker's answer as JSON. Exit status 0 when it answered.
  [[ -x $python ]] || { say "no Python with the project at $python (run 'make venv' or set TANDEM_PYTHON)"; return 2; }
  "$python" -m streamer broker check --bootstrap "$1" --timeout-s 3 2>/dev/null
}

fetch_jars() {
  [[ -f $libs/.complete ]] && return 0
  command -v mvn >/dev/null || die "mvn not found: Maven 3.8+ is needed to fetch Apache Kafka $version"
  command -v java >/dev/null || die "java not found: Java 17+ is needed to run Apache Kafka $version"
  say "fetching Apache Kafka $version and its runtime dependencies into $libs"
  mkdir -p "$cache"
  local staging
  staging=$(mktemp -d "$cache/.staging.XXXXXX")
  if ! mvn -q -B -f "$pom" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$staging/libs" >"$staging/mvn.log" 2>&1; then
    cat "$staging/mvn.log" >&2
    rm -rf "$staging"
    die "mvn could not resolve org.apache.kafka:kafka_2.13:$version (log above)"
  fi
  touch "$staging/libs/.complete"
  # Another clone may have filled the cache meanwhile; either copy is complete.
  mv -T "$staging/libs" "$libs" 2>/dev/null || true
  rm -rf "$staging"
}

write_config() {
  mkdir -p "$home"
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port"
  local advertised="PLAINTEXT://127.0.0.1:$port"
  local protocols="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
  local sasl=""
  if [[ -n $sasl_port ]]; then
    # A SASL listener beside the plain one, for tests of authentication (PLAIN: the users and
    # passwords live in this config). Brokers and controllers keep talking PLAINTEXT.
    listeners+=",SASL_PLAINTEXT://127.0.0.1:$sasl_port"
    advertised+=",SASL_PLAINTEXT://127.0.0.1:$sasl_port"
    protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    local users="" pair
    for pair in $sasl_users; do users+=" user_${pair%%:*}=\"${pair#*:}\""; done
    sasl="sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required$users;"
  fi
  cat >"$home/server.properties" <<EOF
# Written by scripts/kafka.sh: single-node KRaft, broker and controller in one process, test-friendly.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
$sasl
log.dirs=$home/data
num.partitions=1
auto.create.topics.enable=false
delete.topic.enable=true
group.initial.rebalance.delay.ms=0
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
log.segment.bytes=67108864
log.retention.hours=24
EOF
}

format_storage() {
  [[ -f $home/data/meta.properties ]] && return 0
  local cluster_id
  cluster_id=$(java -cp "$libs/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  say "formatting KRaft log dir $home/data (cluster $cluster_id)"
  java -cp "$libs/*" -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    kafka.tools.StorageTool format --standalone -t "$cluster_id" -c "$home/server.properties" \
    >>"$logfile" 2>&1 || die "formatting the log dir failed"
}

wait_until_ready() {
  local pid=$1 deadline=$((SECONDS + start_timeout_s))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || die "the broker exited during start-up"
    if port_open "$port" && probe "$bootstrap" >/dev/null; then
      return 0
    fi
    sleep 0.5
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  die "the broker did not answer a metadata request on $bootstrap within ${start_timeout_s}s; killed it"
}

cmd_start() {
  if [[ -n ${TANDEM_KAFKA_BOOTSTRAP:-} ]]; then
    say "TANDEM_KAFKA_BOOTSTRAP=$TANDEM_KAFKA_BOOTSTRAP: using that cluster, starting nothing"
    return 0
  fi
  local pid started=$SECONDS
  pid=$(broker_pid)
  if [[ -n $pid ]]; then
    say "Apache Kafka $version already running (pid $pid) on $bootstrap"
    return 0
  fi
  rm -f "$pidfile"
  port_open "$port" && die "port $port is taken by another process (another checkout's broker? stop it, or set TANDEM_BROKER_PORT)"
  fetch_jars
  write_config
  echo "===== start $(date -u +%FT%TZ) =====" >>"$logfile"
  format_storage
  setsid nohup java "-Xms$heap" "-Xmx$heap" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" -Dkafka.logs.dir="$home" \
    -cp "$libs/*" kafka.Kafka "$home/server.properties" >>"$logfile" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
  wait_until_ready "$pid"
  say "Apache Kafka $version ready on $bootstrap (pid $pid, $((SECONDS - started))s; log $logfile)"
}

cmd_stop() {
  if [[ -n ${TANDEM_KAFKA_BOOTSTRAP:-} ]]; then
    say "TANDEM_KAFKA_BOOTSTRAP is set: not stopping an external cluster"
    return 0
  fi
  local pid
  pid=$(broker_pid)
  if [[ -z $pid ]]; then
    rm -f "$pidfile"
    say "not running"
    return 0
  fi
  kill -TERM "$pid"
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    say "no clean shutdown within 30s; killing pid $pid"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
  say "stopped (pid $pid)"
}

cmd_status() {
  local target=${TANDEM_KAFKA_BOOTSTRAP:-$bootstrap} pid
  pid=$(broker_pid)
  if [[ -z ${TANDEM_KAFKA_BOOTSTRAP:-} && -z $pid ]]; then
    echo "not running (Apache Kafka $version, would listen on $bootstrap)"
    return 3
  fi
  if answer=$(probe "$target"); then
    echo "running${pid:+ (pid $pid)}: $answer"
  else
    echo "not answering on $target${pid:+ (pid $pid is alive)}"
    return 1
  fi
}

cmd_logs() {
  [[ -f $logfile ]] || { say "no log yet at $logfile"; return 0; }
  if [[ ${1:-} == -f ]]; then tail -n 100 -f "$logfile"; else tail -n 100 "$logfile"; fi
}

cmd_wipe() {
  cmd_stop
  [[ -n ${TANDEM_KAFKA_BOOTSTRAP:-} ]] && return 0
  rm -rf "$home/data" "$logfile"
  say "wiped $home/data"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  logs) cmd_logs "${2:-}" ;;
  wipe) cmd_wipe ;;
  bootstrap) echo "${TANDEM_KAFKA_BOOTSTRAP:-$bootstrap}" ;;
  version) echo "$version" ;;
  *)
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

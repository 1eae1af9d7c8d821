# watch_gather.sh: everything one `vpsup watch --local` run looks at, in one
# exec (watch::gather parses it): each site's health path through this
# host's own nginx (its name as SNI and Host), the certificate nginx serves
# for it, the app's containers (its project's and the serving slot's), the disks of / and Docker's data, Docker's
# build cache, the renewal service's last result, a pending reboot, and the
# kernel's OOM kill counter; then the backup parts (backup::status). Each
# part starts with a marker line; a part whose tool is missing stays empty.
# shellcheck disable=SC2016
marker={{marker}}
nginx_host={{nginx_host}}
nginx_port={{nginx_port}}
part() { printf '\n%s %s\n' "$marker" "$1"; }
set -- {{sites}}
while [ $# -ge 2 ]; do
  name=$1
  path=$2
  shift 2
  part "site $name"
  curl -sS -k -o /dev/null -w '%{http_code}\n' --max-time 10 \
    --resolve "$name:$nginx_port:$nginx_host" "https://$name:$nginx_port$path" 2>&1
  part "certificate $name"
  # timeout: a handshake that never ends must not hold the run (and its alerts).
  timeout 15 openssl s_client -connect "$nginx_host:$nginx_port" -servername "$name" </dev/null 2>/dev/null |
    openssl x509 2>/dev/null
done
project={{project}}
serving={{serving}}
# The compose projects of the app's containers, one a line: its own, and the
# slot nginx serves, where its site services run (deploy::switch). The other
# slot holds nothing, or a failed deploy's leftovers: never reported.
app_projects() {
  echo "$project"
  case "$(head -n 1 "$serving" 2>/dev/null)" in
    blue) echo {{blue}} ;;
    green) echo {{green}} ;;
  esac
}
root=
if [ -n "$project" ]; then
  part containers
  if ! command -v docker >/dev/null 2>&1; then
    echo 'error docker is not installed'
  elif ! ids=$(app_projects | while read -r p; do
    found=$(timeout 30 docker ps -aq --filter "label=com.docker.compose.project=$p" 2>&1) ||
      { echo "error $found" | head -n 1; exit 1; }
    [ -z "$found" ] || echo "$found"
  done); then
    # Its last line: the error, after the ids of the projects listed before.
    printf '%s\n' "$ids" | tail -n 1
  elif [ -n "$ids" ]; then
    # shellcheck disable=SC2086
    timeout 30 docker inspect --format '{{index .Config.Labels "com.docker.compose.service"}}	{{.Name}}	{{.State.Status}}	{{if .State.Health}}{{.State.Health.Status}}{{ else }}-{{ end }}	{{.RestartCount}}	{{.State.ExitCode}}' $ids 2>&1
  fi
  root=$(timeout 30 docker info --format '{{.DockerRootDir}}' 2>/dev/null)
  part build-cache
  timeout 30 docker system df --format '{{.Type}}	{{.Size}}' 2>/dev/null | grep '^Build Cache' | cut -f2
fi
part disks
df -Pk / ${root:+"$root"} 2>/dev/null
part renewal
systemctl show -p LoadState -p Result -p ExecMainExitTimestamp {{renew_service}} 2>/dev/null
part reboot
if [ -f /var/run/reboot-required ]; then
  echo required
  cat /var/run/reboot-required.pkgs 2>/dev/null
fi
part oom
cat /proc/sys/kernel/random/boot_id 2>/dev/null
grep '^oom_kill ' /proc/vmstat 2>/dev/null
{{backups}}

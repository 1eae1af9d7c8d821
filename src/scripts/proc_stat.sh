# vpsup_proc /proc/PID/stat sets vpsup_pid, vpsup_state (Z: it ended,
# unreaped) and vpsup_start (the process's start time: a recycled pid has
# another). Fields are counted after the command name, which may hold spaces.
# It sets variables for its caller: unused here.
# shellcheck disable=SC2034
vpsup_proc() { read -r vpsup_stat 2>/dev/null < "$1" || return 1; vpsup_pid=${vpsup_stat%% *}; vpsup_stat=${vpsup_stat##*\) }; vpsup_state=${vpsup_stat%% *}; vpsup_start=$(echo "$vpsup_stat" | cut -d' ' -f20); }

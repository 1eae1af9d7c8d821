# Prints every certificate in the store at `store` (and `reload_pending`
# when a reload is still owed), for acme::store::parse_listing. (SC2015:
# `[ a ] && [ b ] || continue` skips a certificate unless both files exist,
# as meant.)
[ ! -e {{store}}/{{reload_pending}} ] || echo {{reload_pending}}
d={{store}}/certs
if [ -d "$d" ]; then
  for c in "$d"/*/; do
    # shellcheck disable=SC2015
    [ -f "$c/cert.json" ] && [ -f "$c/fullchain.pem" ] || continue
    printf 'cert %s\n' "$(basename "$c")"
    printf 'meta %s\n' "$(base64 -w0 "$c/cert.json")"
    printf 'chain %s\n' "$(base64 -w0 "$c/fullchain.pem")"
  done
fi

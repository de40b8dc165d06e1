# Replaces a message appended over IMAP with its PGP/MIME encryption to the active keys of
# the logged-in user's sealpost account (`sealpost encrypt --account USER`).
require ["vnd.dovecot.filter", "imapsieve", "environment", "variables"];

if environment :matches "imap.user" "*" {
  filter "sealpost-encrypt" ["${1}"];
}

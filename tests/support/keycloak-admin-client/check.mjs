// Drives the Keycloak contract double with Keycloak's official admin client
// (@keycloak/keycloak-admin-client, pinned in package.json) through the calls
// the idp worker makes, as an outside reference: if the double answered a call
// differently from what the official client expects (a path, a status, a
// Location header, a body), this script fails.
//
//   KEYCLOAK_URL=http://127.0.0.1:18080 SHARED_REALM=landlord node check.mjs
//
// The double must have the shared realm with organizations enabled (as the
// keycloak-double binary and the tests set it up). Exits non-zero on the first
// failure, naming the call.

import KcAdminClient from "@keycloak/keycloak-admin-client";

const baseUrl = process.env.KEYCLOAK_URL ?? "http://127.0.0.1:18080";
const shared = process.env.SHARED_REALM ?? "landlord";
const clientId = process.env.KEYCLOAK_CLIENT_ID ?? "landlord-idp";
const clientSecret = process.env.KEYCLOAK_CLIENT_SECRET ?? "landlord-idp-secret";
const suffix = Math.random().toString(36).slice(2, 8);
const realm = `reference-${suffix}`;

let step = "start";
function check(condition, what) {
  if (!condition) throw new Error(`${step}: ${what}`);
}

/** A direct grant (password) at the realm's token endpoint: its status and body. */
async function signIn(realmName, username, password) {
  const response = await fetch(`${baseUrl}/realms/${encodeURIComponent(realmName)}/protocol/openid-connect/token`, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "password", client_id: "admin-cli", username, password }),
  });
  return { status: response.status, body: await response.json() };
}

/** The status of a failed call of the admin client. */
async function failureStatus(call) {
  try {
    await call();
  } catch (error) {
    return error.response?.status;
  }
  return 200;
}

async function main() {
  const kc = new KcAdminClient({ baseUrl, realmName: "master" });
  // The official client authenticates with client_secret_basic.
  step = "client credentials grant (client_secret_basic)";
  await kc.auth({ grantType: "client_credentials", clientId, clientSecret });
  check(typeof kc.accessToken === "string" && kc.accessToken.length > 0, "no access token");

  step = "realms.create";
  const created = await kc.realms.create({
    realm,
    enabled: true,
    displayName: "Reference Inc.",
    attributes: { tenantId: "reference-id", landlordSagaId: "saga-reference" },
  });
  check(created.realmName === realm, `Location names ${JSON.stringify(created)}`);
  step = "realms.create again";
  check((await failureStatus(() => kc.realms.create({ realm, enabled: true }))) === 409, "a taken realm is not 409");

  step = "realms.update (displayName alone)";
  await kc.realms.update({ realm }, { displayName: "Renamed Inc." });
  let read = await kc.realms.findOne({ realm });
  check(read.displayName === "Renamed Inc.", `displayName ${read.displayName}`);
  check(read.attributes?.tenantId === "reference-id", "a field update lost the attributes");

  step = "clients.create";
  const client = await kc.clients.create({
    realm,
    clientId: "reference-app",
    publicClient: true,
    redirectUris: ["https://old.example/*"],
    webOrigins: ["https://old.example"],
    attributes: { tenantId: "reference-id", "pkce.code.challenge.method": "S256" },
  });
  check(typeof client.id === "string" && client.id.length > 0, "no client id from Location");
  step = "clients.find by clientId";
  const [found] = await kc.clients.find({ realm, clientId: "reference-app" });
  check(found?.id === client.id, "the client is not found by clientId");
  step = "clients.update (read, change, write back)";
  await kc.clients.update(
    { realm, id: client.id },
    { ...found, redirectUris: ["https://new.example/*"], webOrigins: ["https://new.example"] },
  );
  const updated = await kc.clients.findOne({ realm, id: client.id });
  check(updated.redirectUris?.[0] === "https://new.example/*", `redirectUris ${updated.redirectUris}`);
  check(updated.webOrigins?.[0] === "https://new.example", `webOrigins ${updated.webOrigins}`);
  check(updated.attributes?.["pkce.code.challenge.method"] === "S256", "the update lost an attribute");

  step = "users.create";
  const user = await kc.users.create({ realm, username: "ada@reference.test", email: "ada@reference.test", enabled: true });
  check(typeof user.id === "string" && user.id.length > 0, "no user id from Location");
  step = "users.resetPassword";
  await kc.users.resetPassword({ realm, id: user.id, credential: { type: "password", value: "s3cret!", temporary: false } });
  step = "password grant in the tenant realm";
  let login = await signIn(realm, "ada@reference.test", "s3cret!");
  check(login.status === 200 && login.body.access_token, `sign-in answered ${login.status}`);

  step = "realms.update (enabled: false) refuses sign-in";
  await kc.realms.update({ realm }, { enabled: false });
  read = await kc.realms.findOne({ realm });
  check(read.enabled === false, "the realm is still enabled");
  login = await signIn(realm, "ada@reference.test", "s3cret!");
  check(login.status === 403 && login.body.error === "access_denied", `a disabled realm answered ${login.status}`);
  step = "realms.logoutAll";
  await kc.realms.logoutAll({ realm });
  step = "realms.update (enabled: true) lets sign-in in again";
  await kc.realms.update({ realm }, { enabled: true });
  login = await signIn(realm, "ada@reference.test", "s3cret!");
  check(login.status === 200, `an enabled realm answered ${login.status}`);
  step = "users.logout";
  kc.setConfig({ realmName: realm });
  await kc.users.logout({ id: user.id });
  kc.setConfig({ realmName: "master" });

  step = "organizations.create";
  kc.setConfig({ realmName: shared });
  const org = await kc.organizations.create({
    name: `reference-${suffix}`,
    alias: `reference-${suffix}`,
    enabled: true,
    description: "Reference Inc.",
    domains: [{ name: `reference-${suffix}.example`, verified: false }],
    attributes: { tenantId: ["reference-id"], landlordSagaId: ["saga-reference"] },
  });
  check(typeof org.id === "string" && org.id.length > 0, "no organization id from Location");
  step = "organizations.find (search, exact)";
  const orgs = await kc.organizations.find({ search: `reference-${suffix}`, exact: true });
  check(orgs.length === 1 && orgs[0].id === org.id, `found ${orgs.length}`);
  step = "organizations.findOne";
  const whole = await kc.organizations.findOne({ id: org.id });
  check(whole.attributes?.tenantId?.[0] === "reference-id", "the organization's marker is missing");
  step = "organizations.updateById (whole record, enabled: false)";
  await kc.organizations.updateById({ id: org.id }, { ...whole, enabled: false });
  const disabled = await kc.organizations.findOne({ id: org.id });
  check(disabled.enabled === false, "the organization is still enabled");
  check(disabled.attributes?.tenantId?.[0] === "reference-id", "a whole-record update lost the attributes");
  check(disabled.domains?.[0]?.name === `reference-${suffix}.example`, "a whole-record update lost the domains");

  step = "users.create in the shared realm";
  const member = await kc.users.create({ username: `m-${suffix}@reference.test`, enabled: true });
  step = "organizations.addMember";
  await kc.organizations.addMember({ orgId: org.id, userId: member.id });
  step = "organizations.listMembers";
  let members = await kc.organizations.listMembers({ orgId: org.id });
  check(members.length === 1 && members[0].id === member.id, `members ${JSON.stringify(members)}`);
  step = "users.logout (a member)";
  await kc.users.logout({ id: member.id });
  step = "organizations.delMember";
  await kc.organizations.delMember({ orgId: org.id, userId: member.id });
  members = await kc.organizations.listMembers({ orgId: org.id });
  check(members.length === 0, "the member is still listed");
  step = "users.del";
  await kc.users.del({ id: member.id });
  step = "organizations.delById";
  await kc.organizations.delById({ id: org.id });
  check((await failureStatus(() => kc.organizations.findOne({ id: org.id }))) === 404, "a deleted organization is not 404");

  step = "realms.del";
  kc.setConfig({ realmName: "master" });
  await kc.realms.del({ realm });
  check((await kc.realms.findOne({ realm })) == null, "a deleted realm is still found");

  step = "a call the double does not implement";
  kc.setConfig({ realmName: shared });
  const status = await failureStatus(() => kc.groups.find());
  check(status === 501, `an unimplemented call answered ${status}, not 501`);
  console.log("the official admin client agrees with the Keycloak double: every call passed");
}

main().catch((error) => {
  console.error(`keycloak-admin-client check failed at ${step}: ${error.message}`);
  if (error.responseData) console.error(JSON.stringify(error.responseData));
  process.exit(1);
});

/* global ChromeUtils, Ci, Services */
// Privileged part of the test driver: gives the default IMAP account its password (in memory:
// a fresh profile has none, and a prompt would block the run) and fetches the INBOX.
var { ExtensionCommon } = ChromeUtils.importESModule("resource://gre/modules/ExtensionCommon.sys.mjs");
var { MailServices } = ChromeUtils.importESModule("resource:///modules/MailServices.sys.mjs");

this.tanbaTest = class extends ExtensionCommon.ExtensionAPI {
  getAPI() {
    return {
      tanbaTest: {
        async login(password) {
          const server = MailServices.accounts.defaultAccount.incomingServer;
          server.password = password;
          let inbox = server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
          if (!inbox) {
            server.performExpand(null);
            inbox = server.rootFolder.getFolderWithFlags(Ci.nsMsgFolderFlags.Inbox);
          }
          if (inbox) inbox.updateFolder(null);
        },
        dump(line) {
          Services.console.logStringMessage(line);
          dump(line + "\n");
        },
      },
    };
  }
};

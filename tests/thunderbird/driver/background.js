// Test driver: log in, wait (bounded) until the INBOX has each message, open it in a tab,
// one after the other, as a user clicking them would.
(async () => {
  const cfg = await (await fetch("config.json")).json();
  await browser.tanbaTest.login(cfg.password);
  browser.tanbaTest.dump("tanba-test: logged in");
  for (const messageId of cfg.messageIds) {
    let opened = false;
    for (let i = 0; i < 120 && !opened; i++) {
      const found = await browser.messages.query({ headerMessageId: messageId });
      const list = found.messages ?? [];
      if (list.length > 0) {
        await browser.messageDisplay.open({ messageId: list[0].id, location: "tab" });
        browser.tanbaTest.dump(`tanba-test: opened <${messageId}>`);
        opened = true;
        break;
      }
      if (i % 5 === 4) await browser.tanbaTest.login(cfg.password);
      await new Promise((r) => setTimeout(r, 1000));
    }
    if (!opened) {
      browser.tanbaTest.dump(`tanba-test: message <${messageId}> never arrived`);
      return;
    }
    await new Promise((r) => setTimeout(r, 1500)); // one tab after the other
  }
})();
